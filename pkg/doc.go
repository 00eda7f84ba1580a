// Package pkg is the root of hookbus's shared library. Its sub-packages hold
// the message contract (contract), the RabbitMQ object names and declarations
// (topology), connection and confirmed publishing (rabbit), the consumer
// runtime that runs handlers (consume), shared configuration pieces (config)
// and helpers for integration tests against a real broker (rabbittest).
package pkg
