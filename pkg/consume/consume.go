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

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/topology"
)

// Handler processes one webhook. Handle must return when ctx is done; its
// deadline is the handler timeout. A nil error acks the message; any error
// moves it to the parking lot with the error text in a header. Handle may
// be called concurrently, also for the same message id (delivery is at least
// once), so it should be idempotent by msg.ID.
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
}

// Outcome is what became of one delivery.
type Outcome string

// Outcomes passed to Options.Observe.
const (
	OutcomeAcked    Outcome = "acked"    // the handler succeeded
	OutcomeParked   Outcome = "parked"   // the handler failed or the message broke the contract
	OutcomeRequeued Outcome = "requeued" // shutdown interrupted the handler
)

// Reasons for parking, in the hookbus-parked-reason header.
const (
	ReasonHandlerError      = "handler-error"
	ReasonTimeout           = "timeout"
	ReasonContractViolation = "contract-violation"
	ReasonPanic             = "panic"
)

// Headers a parked message gains. The original properties and headers are
// kept unchanged.
const (
	HeaderParkedReason = "hookbus-parked-reason"
	HeaderError        = "hookbus-error"
	HeaderRoute        = "hookbus-route"
	HeaderRoutingKey   = "hookbus-routing-key"
	HeaderParkedAt     = "hookbus-parked-at"
	HeaderAttempts     = "hookbus-attempts"
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
	}
	opts = opts.withDefaults()
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
		ch, deliveries, err := c.subscribe(conn, queue, tag)
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

func (c *Consumer) subscribe(conn *amqp.Connection, queue, tag string) (*amqp.Channel, <-chan amqp.Delivery, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, nil, fmt.Errorf("open channel: %w", err)
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

// handle runs the route's handler on one delivery and settles it.
func (c *Consumer) handle(handlerCtx context.Context, route Route, d *amqp.Delivery) {
	msg, err := contract.Decode(d)
	if err != nil {
		c.log.Error("message violates the contract, parking it", "route", route.Name, "message_id", d.MessageId, "routing_key", d.RoutingKey, "error", err)
		c.park(route, d, ReasonContractViolation, err)
		c.observe(route, OutcomeParked, 0)
		return
	}

	start := time.Now()
	reason, err := c.call(handlerCtx, route, msg)
	elapsed := time.Since(start)

	switch {
	case err == nil:
		if ackErr := d.Ack(false); ackErr != nil {
			c.log.Warn("ack failed, the message will be redelivered", "route", route.Name, "message_id", msg.ID, "error", ackErr)
		}
		c.observe(route, OutcomeAcked, elapsed)
	case handlerCtx.Err() != nil:
		// Shutdown cut the handler short: that says nothing about the
		// message, so it goes back to the queue for another consumer.
		c.log.Warn("shutdown interrupted handler, requeueing", "route", route.Name, "message_id", msg.ID)
		if nackErr := d.Nack(false, true); nackErr != nil {
			c.log.Warn("requeue failed, the broker requeues the message when the channel closes", "route", route.Name, "message_id", msg.ID, "error", nackErr)
		}
		c.observe(route, OutcomeRequeued, elapsed)
	default:
		c.log.Warn("handler failed, parking message", "route", route.Name, "message_id", msg.ID, "source", msg.Source, "event_type", msg.EventType, "reason", reason, "error", err)
		c.park(route, d, reason, err)
		c.observe(route, OutcomeParked, elapsed)
	}
}

// call runs the handler with the handler timeout and turns a panic into an
// error. It returns the parking reason that fits the error.
func (c *Consumer) call(handlerCtx context.Context, route Route, msg *contract.Message) (reason string, err error) {
	ctx, cancel := context.WithTimeout(handlerCtx, c.opts.HandlerTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			reason, err = ReasonPanic, fmt.Errorf("handler panicked: %v", p)
		}
	}()

	err = route.Handler.Handle(ctx, msg)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && handlerCtx.Err() == nil {
		return ReasonTimeout, fmt.Errorf("handler timed out after %s: %w", c.opts.HandlerTimeout, err)
	}
	return ReasonHandlerError, err
}

// park publishes a copy of d with failure headers to the parking lot, waits
// for the broker's confirm and only then acks d, so the message exists in at
// least one queue at every moment. When the copy cannot be published, it
// rejects d instead: the route queue dead-letters it to the parking lot at
// least once, with the broker's x-death header but without the error text.
func (c *Consumer) park(route Route, d *amqp.Delivery, reason string, cause error) {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		headers[k] = v
	}
	headers[HeaderParkedReason] = reason
	headers[HeaderError] = truncate(cause.Error(), maxErrorLength)
	headers[HeaderRoute] = route.Name
	headers[HeaderRoutingKey] = d.RoutingKey
	headers[HeaderParkedAt] = time.Now().UTC().Format(time.RFC3339Nano)
	headers[HeaderAttempts] = int32(1)

	msg := amqp.Publishing{
		Headers:         headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
	if msg.MessageId == "" {
		// Publisher matches returns by message id.
		msg.MessageId = fmt.Sprintf("%s-%d", route.Name, d.DeliveryTag)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.publisher.Publish(ctx, c.names.ParkedExchange(), d.RoutingKey, msg)
	if err == nil {
		if ackErr := d.Ack(false); ackErr != nil {
			c.log.Warn("ack after parking failed, the message will be redelivered and may be parked twice", "route", route.Name, "message_id", d.MessageId, "error", ackErr)
		}
		return
	}

	c.log.Error("parking publish failed, rejecting so that the broker dead-letters the message", "route", route.Name, "message_id", d.MessageId, "error", err)
	if rejectErr := d.Reject(false); rejectErr != nil {
		c.log.Warn("reject failed, the message will be redelivered", "route", route.Name, "message_id", d.MessageId, "error", rejectErr)
	}
}

func (c *Consumer) observe(route Route, outcome Outcome, elapsed time.Duration) {
	if c.opts.Observe != nil {
		c.opts.Observe(route.Name, outcome, elapsed)
	}
}

// consumerTag returns a consumer tag that names the route and is unique on
// the broker, so that consumers are easy to tell apart in the management UI.
func consumerTag(route string) string {
	buf := make([]byte, 4)
	_, _ = rand.Read(buf)
	return fmt.Sprintf("hookbus-%s-%x", route, buf)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
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
