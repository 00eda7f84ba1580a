// Package e2e tests ingest and processor together against a real RabbitMQ
// broker. The tests post sample provider webhooks to a running ingest and
// check that a processor's handler receives them with the same body bytes,
// id, event type and headers, or that they wait in the expected queue.
//
// Each test uses a namespace of its own and deletes it at the end. The broker
// comes from HOOKBUS_AMQP_URL (default amqp://guest:guest@127.0.0.1:5672/).
// Without a broker the tests are skipped, except under CI=true, where they
// fail (see package rabbittest).
package e2e
