package service

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hookbus/hookbus/pkg/config"
)

// Limits that Config.Validate enforces.
const (
	// MaxPrefetch is the largest prefetch count AMQP 0-9-1 can carry:
	// basic.qos sends it as a 16-bit number.
	MaxPrefetch = 65535
	// MaxConcurrency bounds the number of handler goroutines.
	MaxConcurrency = 10000
	// MaxHandlerTimeout is RabbitMQ's default consumer_timeout of 1800000 ms
	// (RabbitMQ 3.10.8 reports this value). The broker closes the channel of
	// a delivery left unacknowledged longer than that, so every handler call
	// must end before it.
	MaxHandlerTimeout = 30 * time.Minute
)

// Config is the processor's configuration, read from HOOKBUS_* environment
// variables by config.Load.
type Config struct {
	config.Broker
	config.Log

	Addr           string        `envconfig:"PROCESSOR_ADDR" default:":8081" desc:"host:port of the HTTP server for /healthz, /readyz and /metrics"`
	Prefetch       int           `envconfig:"PREFETCH" default:"200" desc:"number of unacknowledged messages the broker sends ahead on each route's channel (1 to 65535)"`
	Concurrency    int           `envconfig:"CONCURRENCY" default:"32" desc:"maximum number of handler calls running at once, across all routes (1 to 10000)"`
	HandlerTimeout time.Duration `envconfig:"HANDLER_TIMEOUT" default:"30s" desc:"duration after which a handler call is cancelled and its message parked with reason timeout (more than 0, less than 30m)"`
	ShutdownGrace  time.Duration `envconfig:"SHUTDOWN_GRACE" default:"25s" desc:"duration that running handlers may take to finish after a shutdown signal before they are cancelled and their messages requeued (more than 0)"`
}

// Validate checks every field and returns all problems joined, each naming
// its environment variable.
func (c Config) Validate() error {
	errs := []error{c.Broker.Validate(), c.Log.Validate()}
	errs = append(errs, config.CheckListenAddr(config.Prefix+"_PROCESSOR_ADDR", c.Addr))
	if c.Prefetch < 1 || c.Prefetch > MaxPrefetch {
		errs = append(errs, fmt.Errorf("%s_PREFETCH: %d is out of range (want 1 to %d)", config.Prefix, c.Prefetch, MaxPrefetch))
	}
	if c.Concurrency < 1 || c.Concurrency > MaxConcurrency {
		errs = append(errs, fmt.Errorf("%s_CONCURRENCY: %d is out of range (want 1 to %d)", config.Prefix, c.Concurrency, MaxConcurrency))
	}
	if c.HandlerTimeout <= 0 || c.HandlerTimeout >= MaxHandlerTimeout {
		errs = append(errs, fmt.Errorf("%s_HANDLER_TIMEOUT: %s is out of range (want more than 0 and less than %s, the broker's default consumer timeout)", config.Prefix, c.HandlerTimeout, MaxHandlerTimeout))
	}
	if c.ShutdownGrace <= 0 {
		errs = append(errs, fmt.Errorf("%s_SHUTDOWN_GRACE: %s is out of range (want more than 0)", config.Prefix, c.ShutdownGrace))
	}
	return errors.Join(errs...)
}

// Usage writes the help text of the processor command to w: what the
// processor does, then a table of every environment variable with its
// default and description.
func Usage(w io.Writer) error {
	const about = `hookbus processor consumes the webhook events that hookbus ingest published
to RabbitMQ. Each route's quorum queue receives the events whose routing key
(<source>.<event type>) matches one of the route's bindings, and the route's
handler runs on each event. An event whose handler succeeds is acknowledged.
An event whose handler fails, panics or times out, or that breaks the message
contract, is moved to the parking lot queue <namespace>.parked with headers
that give the reason. The built-in route "default" binds "#" and logs every
event. An HTTP server serves /healthz, /readyz and /metrics. On SIGINT or
SIGTERM the processor stops consuming, waits up to HOOKBUS_SHUTDOWN_GRACE for
running handlers to finish, and exits.

Configuration comes from these environment variables:

`
	if _, err := io.WriteString(w, about); err != nil {
		return err
	}
	return config.Usage(w, &Config{})
}
