// Package consume runs handlers on the webhooks of one or more routes. It
// consumes each route's queue with manual acks and an explicit prefetch, runs
// the route's Handler on a bounded number of goroutines, acks what succeeded
// and moves what failed to the parking lot.
package consume

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/topology"
)

// Handler processes one webhook. Handle must return when ctx is done; its
// deadline is the handler timeout. A nil error acks the message. An error
// is retried later by the route's RetryPolicy, unless it wraps ErrPermanent
// or the attempts are used up: then the message goes to the parking lot with
// the error text in a header. Handle may be called concurrently, also for
// the same message id (delivery is at least once), so it should be
// idempotent by msg.ID.
type Handler interface {
	Handle(ctx context.Context, msg *contract.Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, msg *contract.Message) error

// Handle calls f(ctx, msg).
func (f HandlerFunc) Handle(ctx context.Context, msg *contract.Message) error {
	return f(ctx, msg)
}

// Route is a topology route with the handler that processes its messages.
type Route struct {
	topology.Route
	Handler Handler
	// Retry, when set, replaces Options.Retry for this route.
	Retry *RetryPolicy
}

// Outcome is the way a delivery was settled.
type Outcome string

// Outcomes passed to Options.Observe.
const (
	OutcomeAcked    Outcome = "acked"    // the handler succeeded
	OutcomeParked   Outcome = "parked"   // the handler failed or the message broke the contract
	OutcomeRequeued Outcome = "requeued" // shutdown interrupted the handler
	OutcomeRetried  Outcome = "retried"  // the handler failed and the message waits for a retry
)

// Reasons for parking, in the hookbus-parked-reason header.
const (
	ReasonPermanentError    = "permanent-error"    // the handler marked the error permanent
	ReasonAttemptsExhausted = "attempts-exhausted" // transient failures used up every attempt
	ReasonTimeout           = "timeout"            // the last attempt overran the handler timeout
	ReasonContractViolation = "contract-violation" // the message does not follow the contract
	ReasonPanic             = "panic"              // the handler panicked
)

// Headers a retried or parked message gains. The original properties and
// headers are kept unchanged.
const (
	HeaderAttempts      = "hookbus-attempts"        // failed attempts so far, int
	HeaderFirstFailedAt = "hookbus-first-failed-at" // RFC 3339 time of the first failure
	HeaderLastFailedAt  = "hookbus-last-failed-at"  // RFC 3339 time of the latest failure
	HeaderError         = "hookbus-error"           // latest error text, at most 1,024 bytes
	HeaderRoute         = "hookbus-route"           // the route whose handler failed
	HeaderRoutingKey    = "hookbus-routing-key"     // the routing key the message was published with
	HeaderParkedReason  = "hookbus-parked-reason"   // one of the Reason constants
	HeaderParkedAt      = "hookbus-parked-at"       // RFC 3339 time of parking
	HeaderReplays       = "hookbus-replays"         // times an operator replayed the message, int
	HeaderDelay         = topology.HeaderDelay      // delay queue selector, in milliseconds
)

// maxErrorLength is the number of bytes of a handler error kept in the
// hookbus-error header.
const maxErrorLength = 1024

// Options configures a Consumer. Zero values take the defaults given.
type Options struct {
	// Prefetch is the number of unacknowledged deliveries the broker
	// sends ahead on each route's channel. Default 200.
	Prefetch int
	// Concurrency is the maximum number of handler calls running at once,
	// across all routes. Default 32.
	Concurrency int
	// HandlerTimeout bounds each handler call. Default 30 seconds. Keep it
	// well below the broker's consumer_timeout (30 minutes by default),
	// after which the broker closes the channel of an unacked delivery.
	HandlerTimeout time.Duration
	// ShutdownGrace is how long handlers still running when Run's context
	// is done may go on before their contexts are cancelled. Default 25
	// seconds.
	ShutdownGrace time.Duration
	// Logger receives one line per failure and lifecycle events; nil
	// means slog.Default().
	Logger *slog.Logger
	// Retry is the retry policy of routes that set none. The zero value
	// means DefaultRetryPolicy.
	Retry RetryPolicy
	// Observe, when set, is called once per delivery with its route, its
	// outcome and how long the handler ran.
	Observe func(route string, outcome Outcome, handlerDuration time.Duration)
}

func (o Options) withDefaults() Options {
	if o.Prefetch <= 0 {
		o.Prefetch = 200
	}
	if o.Concurrency <= 0 {
		o.Concurrency = 32
	}
	if o.HandlerTimeout <= 0 {
		o.HandlerTimeout = 30 * time.Second
	}
	if o.ShutdownGrace <= 0 {
		o.ShutdownGrace = 25 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if len(o.Retry.Delays) == 0 {
		o.Retry = DefaultRetryPolicy
	}
	return o
}

// Consumer consumes the queues of its routes on a Client's connection. The
// connection's Setup must declare the routes (see topology.Setup).
type Consumer struct {
	client    *rabbit.Client
	publisher *rabbit.Publisher
	names     topology.Names
	routes    []Route
	opts      Options
	log       *slog.Logger

	slots     chan struct{} // one token per running handler
	consuming atomic.Int32  // routes with an active consumer
}

// New returns a Consumer of routes. It parks failed messages with publisher,
// which must run on the same broker. It returns an error for a route without
// a handler or with an invalid or duplicate name.
func New(client *rabbit.Client, publisher *rabbit.Publisher, names topology.Names, routes []Route, opts Options) (*Consumer, error) {
	if len(routes) == 0 {
		return nil, errors.New("consume: no routes")
	}
	seen := map[string]bool{}
	for _, r := range routes {
		if err := topology.ValidateRoute(r.Name); err != nil {
			return nil, err
		}
		if seen[r.Name] {
			return nil, fmt.Errorf("consume: duplicate route %q", r.Name)
		}
		seen[r.Name] = true
		if r.Handler == nil {
			return nil, fmt.Errorf("consume: route %q has no handler", r.Name)
		}
		if r.Retry != nil {
			if err := r.Retry.Validate(); err != nil {
				return nil, fmt.Errorf("consume: route %q: %w", r.Name, err)
			}
		}
	}
	opts = opts.withDefaults()
	if err := opts.Retry.Validate(); err != nil {
		return nil, err
	}
	return &Consumer{
		client:    client,
		publisher: publisher,
		names:     names,
		routes:    routes,
		opts:      opts,
		log:       opts.Logger,
		slots:     make(chan struct{}, opts.Concurrency),
	}, nil
}

// Ready reports whether every route has an active consumer.
func (c *Consumer) Ready() bool {
	return int(c.consuming.Load()) == len(c.routes)
}

// Run consumes until ctx is done. Then it cancels the consumers, lets the
// running handlers finish within ShutdownGrace, acks or parks each, and
// returns. Handlers still running after the grace period see their context
// cancelled and their messages go back to the queue. Deliveries that the
// broker sent ahead but no handler started go back to the queue when the
// channel closes.
func (c *Consumer) Run(ctx context.Context) error {
	handlerCtx, cancelHandlers := context.WithCancel(context.Background())
	defer cancelHandlers()
	stopGrace := context.AfterFunc(ctx, func() {
		t := time.AfterFunc(c.opts.ShutdownGrace, cancelHandlers)
		context.AfterFunc(handlerCtx, func() { t.Stop() })
	})
	defer stopGrace()

	var wg sync.WaitGroup
	for _, route := range c.routes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.consumeRoute(ctx, handlerCtx, route)
		}()
	}
	wg.Wait()
	c.log.Info("consumer stopped")
	return nil
}

// consumeRoute consumes one route's queue, opening a new channel whenever
// the old one closes, until ctx is done.
func (c *Consumer) consumeRoute(ctx, handlerCtx context.Context, route Route) {
	queue := c.names.RouteQueue(route.Name)
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		conn, err := c.client.Connection(ctx)
		if err != nil {
			return
		}
		tag := consumerTag(route.Name)
		ch, deliveries, err := c.subscribe(conn, route, tag)
		if err != nil {
			c.log.Warn("consume failed, retrying", "route", route.Name, "queue", queue, "error", err)
			if !sleepCtx(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, 10*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond

		c.consuming.Add(1)
		c.log.Info("consuming", "route", route.Name, "queue", queue, "prefetch", c.opts.Prefetch)
		var inflight sync.WaitGroup
		c.dispatch(ctx, handlerCtx, route, deliveries, &inflight)
		c.consuming.Add(-1)
		if ctx.Err() != nil {
			// basic.cancel stops the broker from sending more, so that
			// messages published during the grace period go to other
			// consumers instead of waiting in this one's prefetch.
			if err := ch.Cancel(tag, false); err != nil && !errors.Is(err, amqp.ErrClosed) {
				c.log.Warn("consumer cancel failed", "route", route.Name, "error", err)
			}
		}

		// Handlers ack on the channel their delivery came from, so the
		// channel stays open until they are done.
		inflight.Wait()
		if err := ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
			c.log.Warn("channel close failed", "route", route.Name, "error", err)
		}
		if ctx.Err() == nil {
			c.log.Warn("consumer channel closed, resubscribing", "route", route.Name, "queue", queue)
		}
	}
}

// subscribe opens a channel, declares the route's queue and the delay queues
// of its retry schedule, and starts consuming the route's queue. Declaring
// the queue again here recreates it when it was deleted under a running
// consumer; events published meanwhile wait in the unrouted queue.
func (c *Consumer) subscribe(conn *amqp.Connection, route Route, tag string) (*amqp.Channel, <-chan amqp.Delivery, error) {
	queue := c.names.RouteQueue(route.Name)
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
	}
	if err := topology.DeclareRoute(ch, c.names, route.Route); err != nil {
		_ = ch.Close()
		return nil, nil, err
	}
	if err := topology.DeclareDelays(ch, c.names, c.retryPolicy(route).RetrySchedule); err != nil {
		_ = ch.Close()
		return nil, nil, err
	}
	if err := ch.Qos(c.opts.Prefetch, 0, false); err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("set prefetch: %w", err)
	}
	deliveries, err := ch.Consume(queue, tag, false, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		return nil, nil, fmt.Errorf("consume queue %q: %w", queue, err)
	}
	return ch, deliveries, nil
}

// dispatch starts a handler for each delivery until the deliveries channel
// closes (the channel or connection is gone) or ctx is done.
func (c *Consumer) dispatch(ctx, handlerCtx context.Context, route Route, deliveries <-chan amqp.Delivery, inflight *sync.WaitGroup) {
	for {
		select {
		case <-ctx.Done():
			return
		case d, ok := <-deliveries:
			if !ok {
				return
			}
			select {
			case c.slots <- struct{}{}:
			case <-ctx.Done():
				// Not acked: the broker requeues it when the channel closes.
				return
			}
			inflight.Add(1)
			go func() {
				defer inflight.Done()
				defer func() { <-c.slots }()
				c.handle(handlerCtx, route, &d)
			}()
		}
	}
}

// consumerTag returns a consumer tag that names the route and is unique on
// the broker, so that consumers are easy to tell apart in the management UI.
func consumerTag(route string) string {
	buf := make([]byte, 4)
	_, _ = rand.Read(buf)
	return fmt.Sprintf("hookbus-%s-%x", route, buf)
}

// truncate cuts s to at most n bytes without splitting a UTF-8 character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
