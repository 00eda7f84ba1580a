// Package contract defines how one webhook request travels as one AMQP
// message: the body is the raw request body byte for byte, and everything
// else (source, event type, message id, receipt time, the original HTTP
// headers) travels in AMQP properties and headers.
//
// The contract is versioned by the Version constant, carried in the
// "hookbus-contract" header. docs/message-contract.md describes the format
// for consumers written in any language.
package contract
