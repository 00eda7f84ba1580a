// Package chaos checks, against a dedicated RabbitMQ node, that no webhook
// that ingest acknowledged with a 2xx response is lost. Each test runs the
// ingest and processor binaries under steady load and disturbs them or the
// node. The disturbances are a stopped broker application, force-closed
// connections, killed processes, a memory alarm, a deleted route queue,
// SIGTERM and slow clients. Then the test reconciles every accepted message
// id against the ids that processors logged and the messages still in
// queues or in the spool.
//
// The tests run only with HOOKBUS_CHAOS=1, which `make test-chaos` sets,
// because each run starts a RabbitMQ node of its own from the installed
// rabbitmq-server (Linux only) and takes several minutes. They never touch
// the broker of HOOKBUS_AMQP_URL. HOOKBUS_CHAOS_SOAK=1 makes the first four
// tests longer (`make soak`). docs/guarantees.md describes the guarantees
// that the tests check and the results of a run.
package chaos
