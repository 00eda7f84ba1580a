// Package bench measures ingest against a real RabbitMQ broker.
// BenchmarkIngest posts webhooks to an in-process ingest over HTTP, and
// BenchmarkBrokerPublish publishes messages with the same headers and body
// straight to the broker with confirms. Both use the same concurrency and
// the same kind of queue, so the ratio of their rates shows what ingest adds
// to a confirmed publish. Compare the two only within one run on one
// machine.
//
// Run them from the test module with a fixed count, for example
//
//	go test -run '^$' -bench . -benchtime 3000x ./bench/
//
// Each benchmark run uses a namespace of its own, purges its queue after the
// timed loop and deletes the namespace at the end. Without a broker the
// benchmarks are skipped, except under CI=true, where they fail (see
// package rabbittest).
package bench
