package service

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/topology"
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

	Addr           string          `envconfig:"PROCESSOR_ADDR" default:":8081" desc:"host:port of the HTTP server for /healthz, /readyz and /metrics"`
	Prefetch       int             `envconfig:"PREFETCH" default:"200" desc:"number of unacknowledged messages the broker sends ahead on each route's channel (1 to 65535)"`
	Concurrency    int             `envconfig:"CONCURRENCY" default:"32" desc:"maximum number of handler calls running at once, across all routes (1 to 10000)"`
	HandlerTimeout time.Duration   `envconfig:"HANDLER_TIMEOUT" default:"30s" desc:"duration after which a handler call is cancelled and counted as a failed attempt (more than 0, less than 30m)"`
	ShutdownGrace  time.Duration   `envconfig:"SHUTDOWN_GRACE" default:"25s" desc:"duration that running handlers may take to finish after a shutdown signal before they are cancelled and their messages requeued (more than 0)"`
	RetryDelays    []time.Duration `envconfig:"RETRY_DELAYS" default:"10s,1m,10m,1h,6h" desc:"comma-separated waits before the 2nd, 3rd, ... attempt of a message whose handler failed; later attempts wait as long as the last (each at least 1ms)"`
	RetryJitter    float64         `envconfig:"RETRY_JITTER" default:"0.2" desc:"fraction by which each retry wait varies at random, from 0 to 0.5"`
	MaxAttempts    int             `envconfig:"MAX_ATTEMPTS" default:"0" desc:"handler calls, counting the first, after which a message that keeps failing is parked; 0 means one more than the number of retry delays"`
}

// RetryPolicy returns the retry policy the configuration sets.
func (c Config) RetryPolicy() consume.RetryPolicy {
	return consume.RetryPolicy{
		RetrySchedule: topology.RetrySchedule{Delays: c.RetryDelays, Jitter: c.RetryJitter},
		MaxAttempts:   c.MaxAttempts,
	}
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
	errs = append(errs, c.validateRetry()...)
	return errors.Join(errs...)
}

// validateRetry checks the retry variables one by one, so that each error
// names its own variable.
func (c Config) validateRetry() []error {
	var errs []error
	if len(c.RetryDelays) == 0 {
		errs = append(errs, fmt.Errorf("%s_RETRY_DELAYS: missing; want a comma-separated list of durations such as 10s,1m,10m", config.Prefix))
	}
	for _, d := range c.RetryDelays {
		if d < time.Millisecond || d > topology.MaxRetryDelay {
			errs = append(errs, fmt.Errorf("%s_RETRY_DELAYS: delay %s is out of range (want 1ms to %s)", config.Prefix, d, topology.MaxRetryDelay))
		}
	}
	if c.RetryJitter < 0 || c.RetryJitter > 0.5 {
		errs = append(errs, fmt.Errorf("%s_RETRY_JITTER: %g is out of range (want 0 to 0.5)", config.Prefix, c.RetryJitter))
	}
	if c.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("%s_MAX_ATTEMPTS: %d is negative (want 0 for the default, or a positive number)", config.Prefix, c.MaxAttempts))
	}
	return errs
}

// Usage writes the help text of the processor command to w: what the
// processor does, then a table of every environment variable with its
// default and description.
func Usage(w io.Writer) error {
	const about = `hookbus processor consumes the webhook events that hookbus ingest published
to RabbitMQ. Each route's quorum queue receives the events whose routing key
(<source>.<event type>) matches one of the route's bindings, and the route's
handler runs on each event. An event whose handler succeeds is acknowledged.
An event whose handler fails or times out is retried later: it waits in a
delay queue on the broker, HOOKBUS_RETRY_DELAYS apart, until
HOOKBUS_MAX_ATTEMPTS calls have failed. Then, or at once when the handler
returns a permanent error, panics, or the event breaks the message contract,
it is moved to the parking lot queue <namespace>.parked with headers that give
the reason. The built-in route "default" binds "#" and logs every
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
