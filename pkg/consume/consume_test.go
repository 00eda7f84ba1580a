package consume_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// stopTimeout bounds how long a background Run may take to return after its
// context is cancelled before the test fails.
const stopTimeout = 30 * time.Second

// background runs fn in a goroutine until stop is called or the test ends.
// stop cancels fn's context and waits for fn to return.
func background(t *testing.T, fn func(ctx context.Context)) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		fn(ctx)
	}()

	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(stopTimeout):
				t.Errorf("background run did not return within %s of its context being cancelled", stopTimeout)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it is true and fails the test when 15 seconds
// pass first.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// outcomes records what Options.Observe reports, by route.
type outcomes struct {
	mu  sync.Mutex
	got map[string][]consume.Outcome
}

func (o *outcomes) observe(route string, outcome consume.Outcome, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.got == nil {
		o.got = map[string][]consume.Outcome{}
	}
	o.got[route] = append(o.got[route], outcome)
}

func (o *outcomes) of(route string) []consume.Outcome {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]consume.Outcome(nil), o.got[route]...)
}

// env is a running Client, Publisher and Consumer on a test namespace.
type env struct {
	names        topology.Names
	publisher    *rabbit.Publisher
	ch           *amqp.Channel
	outcomes     *outcomes
	stopConsumer func()
}

func start(t *testing.T, routes []consume.Route, opts consume.Options) *env {
	t.Helper()
	url := rabbittest.URL(t)
	var routeNames []string
	var topologyRoutes []topology.Route
	for _, r := range routes {
		routeNames = append(routeNames, r.Name)
		topologyRoutes = append(topologyRoutes, r.Route)
	}
	names := rabbittest.Namespace(t, url, routeNames...)
	for _, r := range routes {
		if r.Retry != nil {
			rabbittest.DeleteDelays(t, url, names, r.Retry.RetrySchedule)
		}
	}
	logger := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))

	client := rabbit.NewClient(rabbit.Config{
		URL:    url,
		Name:   "hookbus-test " + t.Name(),
		Setup:  topology.Setup(names, topologyRoutes...),
		Logger: logger,
	})
	publisher := rabbit.NewPublisher(client, 1, logger)
	e := &env{names: names, publisher: publisher, outcomes: &outcomes{}}
	opts.Logger = logger
	opts.Observe = e.outcomes.observe
	consumer, err := consume.New(client, publisher, names, routes, opts)
	if err != nil {
		t.Fatalf("consume.New: %v", err)
	}

	// Cleanups run in reverse order, so the consumer stops first, then
	// the publisher it parks with, then the client.
	background(t, func(ctx context.Context) { _ = client.Run(ctx) })
	background(t, publisher.Run)
	e.stopConsumer = background(t, func(ctx context.Context) {
		if err := consumer.Run(ctx); err != nil {
			t.Errorf("consumer Run: %v", err)
		}
	})
	waitFor(t, "the consumer is ready", consumer.Ready)
	waitFor(t, "the publisher is ready", publisher.Ready)
	e.ch = rabbittest.Channel(t, url)
	return e
}

// readyAfterStop returns the number of ready messages in queue once the
// stopped consumer is gone from it. A quorum queue returns the deliveries
// that a closed channel left unacked when it removes the consumer (observed
// on RabbitMQ 3.10), so the count includes them.
func (e *env) readyAfterStop(t *testing.T, queue string) int {
	t.Helper()
	var q amqp.Queue
	waitFor(t, "queue "+queue+" has no consumer", func() bool {
		var err error
		q, err = e.ch.QueueDeclarePassive(queue, true, false, false, false, nil)
		if err != nil {
			t.Fatalf("inspect queue %s: %v", queue, err)
		}
		return q.Consumers == 0
	})
	return q.Messages
}

// send publishes msg to the events exchange with its routing key.
func (e *env) send(t *testing.T, msg *contract.Message) {
	t.Helper()
	p, err := msg.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := e.publisher.Publish(ctx, e.names.Exchange(), msg.RoutingKey(), p); err != nil {
		t.Fatalf("publish %s: %v", msg.ID, err)
	}
}

func webhook(id, eventType string) *contract.Message {
	return &contract.Message{
		ID:          id,
		Source:      "shopify",
		EventType:   eventType,
		ContentType: "application/json",
		ReceivedAt:  time.Now(),
		Header: http.Header{
			"Content-Type":    {"application/json"},
			"X-Shopify-Topic": {eventType},
		},
		Meta: map[string]string{"verified-by": "shopify-hmac"},
		Body: []byte(`{"id":820982911946154508,"note":"` + id + `"}`),
	}
}

// TestConsumerParksFailedMessages runs one route per kind of failure that
// parks a message at once, and checks each parked copy. Routes whose errors
// are transient allow one attempt, so they park without a retry.
func TestConsumerParksFailedMessages(t *testing.T) {
	errDownstream := errors.New("order service answered 503")
	oneAttempt := &consume.RetryPolicy{
		RetrySchedule: topology.RetrySchedule{Delays: []time.Duration{time.Second}},
		MaxAttempts:   1,
	}
	routes := []consume.Route{
		{
			Route: topology.Route{Name: "permanent", Bindings: []string{"shopify.orders.#"}},
			Handler: consume.HandlerFunc(func(context.Context, *contract.Message) error {
				return consume.Permanent(errDownstream)
			}),
		},
		{
			Route: topology.Route{Name: "panicking", Bindings: []string{"shopify.products.#"}},
			Handler: consume.HandlerFunc(func(context.Context, *contract.Message) error {
				panic("nil map in handler")
			}),
		},
		{
			Route: topology.Route{Name: "exhausted", Bindings: []string{"shopify.carts.#"}},
			Handler: consume.HandlerFunc(func(context.Context, *contract.Message) error {
				return errDownstream
			}),
			Retry: oneAttempt,
		},
		{
			Route: topology.Route{Name: "slow", Bindings: []string{"shopify.customers.#"}},
			Handler: consume.HandlerFunc(func(ctx context.Context, _ *contract.Message) error {
				<-ctx.Done()
				return ctx.Err()
			}),
			Retry: oneAttempt,
		},
	}
	e := start(t, routes, consume.Options{HandlerTimeout: 200 * time.Millisecond})

	tests := []struct {
		route     string
		msg       *contract.Message
		reason    string
		errorText string
	}{
		{"permanent", webhook("order-1", "orders/create"), consume.ReasonPermanentError, errDownstream.Error()},
		{"panicking", webhook("product-1", "products/update"), consume.ReasonPanic, "nil map in handler"},
		{"exhausted", webhook("cart-1", "carts/update"), consume.ReasonAttemptsExhausted, errDownstream.Error()},
		{"slow", webhook("customer-1", "customers/create"), consume.ReasonTimeout, "timed out after 200ms"},
	}
	sentAt := time.Now()
	for _, tc := range tests {
		e.send(t, tc.msg)
	}

	parked := rabbittest.Drain(t, e.ch, e.names.ParkedQueue(), len(tests), 30*time.Second)
	byRoute := map[string]amqp.Delivery{}
	for _, d := range parked {
		route, _ := d.Headers[consume.HeaderRoute].(string)
		byRoute[route] = d
	}
	for _, tc := range tests {
		t.Run(tc.route, func(t *testing.T) {
			d, ok := byRoute[tc.route]
			if !ok {
				t.Fatalf("no parked message of route %s among %d parked", tc.route, len(parked))
			}
			assertParked(t, d, tc.msg, tc.reason, tc.errorText, sentAt)

			if got := e.outcomes.of(tc.route); len(got) != 1 || got[0] != consume.OutcomeParked {
				t.Errorf("outcomes of route %s = %v, want [parked]", tc.route, got)
			}
		})
	}

	// Stopping the consumer closes its channels, which would requeue any
	// delivery that was not acked.
	e.stopConsumer()
	for _, tc := range tests {
		queue := e.names.RouteQueue(tc.route)
		if n := e.readyAfterStop(t, queue); n != 0 {
			t.Errorf("route queue %s has %d messages after parking, want 0", queue, n)
		}
	}
	if n := rabbittest.MessageCount(t, e.ch, e.names.ParkedQueue()); n != 0 {
		t.Errorf("parked queue has %d messages more than the %d parked", n, len(tests))
	}
}

// assertParked checks the headers of a parked copy of msg after one failed
// attempt, and that it kept the original message.
func assertParked(t *testing.T, d amqp.Delivery, msg *contract.Message, reason, errorText string, sentAt time.Time) {
	t.Helper()
	if got := d.Headers[consume.HeaderParkedReason]; got != reason {
		t.Errorf("%s = %v, want %q", consume.HeaderParkedReason, got, reason)
	}
	if got, _ := d.Headers[consume.HeaderError].(string); !strings.Contains(got, errorText) {
		t.Errorf("%s = %q, want it to contain %q", consume.HeaderError, got, errorText)
	}
	if got := d.Headers[consume.HeaderRoutingKey]; got != msg.RoutingKey() {
		t.Errorf("%s = %v, want %q", consume.HeaderRoutingKey, got, msg.RoutingKey())
	}
	if got := d.Headers[consume.HeaderAttempts]; got != int32(1) {
		t.Errorf("%s = %v (%T), want int32 1", consume.HeaderAttempts, got, got)
	}
	for _, header := range []string{consume.HeaderParkedAt, consume.HeaderFirstFailedAt, consume.HeaderLastFailedAt} {
		value, _ := d.Headers[header].(string)
		at, err := time.Parse(time.RFC3339Nano, value)
		if err != nil {
			t.Errorf("%s = %q is not an RFC 3339 time: %v", header, value, err)
			continue
		}
		if at.Before(sentAt.Add(-time.Second)) || at.After(time.Now().Add(time.Second)) {
			t.Errorf("%s = %s, want a time between publishing and now", header, at)
		}
	}

	if string(d.Body) != string(msg.Body) {
		t.Errorf("parked body = %q, want the original %q", d.Body, msg.Body)
	}
	if d.MessageId != msg.ID {
		t.Errorf("parked message id = %q, want %q", d.MessageId, msg.ID)
	}
	if d.DeliveryMode != amqp.Persistent {
		t.Errorf("parked delivery mode = %d, want persistent", d.DeliveryMode)
	}

	// The original contract headers travel with the parked copy, so it
	// decodes to the same webhook.
	decoded, err := contract.Decode(&d)
	if err != nil {
		t.Fatalf("Decode of the parked copy: %v", err)
	}
	if decoded.EventType != msg.EventType {
		t.Errorf("decoded event type = %q, want %q", decoded.EventType, msg.EventType)
	}
	if !decoded.ReceivedAt.Equal(msg.ReceivedAt) {
		t.Errorf("decoded received-at = %s, want %s", decoded.ReceivedAt, msg.ReceivedAt)
	}
	if got := decoded.Header.Get("X-Shopify-Topic"); got != msg.EventType {
		t.Errorf("decoded X-Shopify-Topic = %q, want %q", got, msg.EventType)
	}
	if got := decoded.Meta["verified-by"]; got != "shopify-hmac" {
		t.Errorf("decoded meta verified-by = %q, want shopify-hmac", got)
	}
}

func TestConsumerParksContractViolation(t *testing.T) {
	var calls atomic.Int32
	routes := []consume.Route{{
		Route: topology.Route{Name: "orders", Bindings: []string{"#"}},
		Handler: consume.HandlerFunc(func(context.Context, *contract.Message) error {
			calls.Add(1)
			return nil
		}),
	}}
	e := start(t, routes, consume.Options{})

	// A message without the contract headers, as a client that does not
	// use this package might publish.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw := amqp.Publishing{MessageId: "raw-1", ContentType: "text/plain", Body: []byte("not a webhook")}
	if err := e.publisher.Publish(ctx, e.names.Exchange(), "shopify.orders.create", raw); err != nil {
		t.Fatalf("publish: %v", err)
	}

	parked := rabbittest.Drain(t, e.ch, e.names.ParkedQueue(), 1, 30*time.Second)
	if len(parked) != 1 {
		t.Fatalf("parked queue has %d messages, want 1", len(parked))
	}
	if got := parked[0].Headers[consume.HeaderParkedReason]; got != consume.ReasonContractViolation {
		t.Errorf("%s = %v, want %q", consume.HeaderParkedReason, got, consume.ReasonContractViolation)
	}
	if string(parked[0].Body) != "not a webhook" {
		t.Errorf("parked body = %q, want the original", parked[0].Body)
	}
	if n := calls.Load(); n != 0 {
		t.Errorf("handler ran %d times for a message that breaks the contract, want 0", n)
	}
}

func TestConsumerAcksHandledMessage(t *testing.T) {
	var mu sync.Mutex
	var handled []string
	routes := []consume.Route{{
		Route: topology.Route{Name: "orders", Bindings: []string{"shopify.orders.#"}},
		Handler: consume.HandlerFunc(func(_ context.Context, msg *contract.Message) error {
			mu.Lock()
			defer mu.Unlock()
			handled = append(handled, msg.ID)
			return nil
		}),
	}}
	e := start(t, routes, consume.Options{})
	msg := webhook("order-ok-1", "orders/create")

	e.send(t, msg)
	waitFor(t, "the handler has run", func() bool { return len(e.outcomes.of("orders")) == 1 })
	if got := e.outcomes.of("orders"); got[0] != consume.OutcomeAcked {
		t.Errorf("outcome = %s, want acked", got[0])
	}

	// An unacked delivery would go back to the queue when the consumer's
	// channel closes, so an empty queue after the stop proves the ack.
	e.stopConsumer()
	queue := e.names.RouteQueue("orders")
	if n := e.readyAfterStop(t, queue); n != 0 {
		t.Errorf("route queue has %d messages after the handler succeeded, want 0", n)
	}
	if n := rabbittest.MessageCount(t, e.ch, e.names.ParkedQueue()); n != 0 {
		t.Errorf("parked queue has %d messages, want 0", n)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(handled) != 1 || handled[0] != msg.ID {
		t.Errorf("handler ran for %q, want exactly once for %s", handled, msg.ID)
	}
}

// TestConsumerRetriesTransientFailure runs two routes that allow two
// attempts. One handler fails once and then succeeds, and the other fails
// both times.
func TestConsumerRetriesTransientFailure(t *testing.T) {
	twoAttempts := &consume.RetryPolicy{
		RetrySchedule: topology.RetrySchedule{Delays: []time.Duration{100 * time.Millisecond}},
		MaxAttempts:   2,
	}
	var recoveringCalls, failingCalls atomic.Int32
	routes := []consume.Route{
		{
			Route: topology.Route{Name: "recovering", Bindings: []string{"shopify.orders.#"}},
			Handler: consume.HandlerFunc(func(context.Context, *contract.Message) error {
				if recoveringCalls.Add(1) == 1 {
					return errors.New("order service answered 503")
				}
				return nil
			}),
			Retry: twoAttempts,
		},
		{
			Route: topology.Route{Name: "failing", Bindings: []string{"shopify.carts.#"}},
			Handler: consume.HandlerFunc(func(context.Context, *contract.Message) error {
				failingCalls.Add(1)
				return errors.New("cart service answered 503")
			}),
			Retry: twoAttempts,
		},
	}
	e := start(t, routes, consume.Options{})

	e.send(t, webhook("order-retry-1", "orders/create"))
	cart := webhook("cart-retry-1", "carts/update")
	sentAt := time.Now()
	e.send(t, cart)

	waitFor(t, "both routes have settled their message", func() bool {
		return len(e.outcomes.of("recovering")) == 2 && len(e.outcomes.of("failing")) == 2
	})
	if got := e.outcomes.of("recovering"); !slices.Equal(got, []consume.Outcome{consume.OutcomeRetried, consume.OutcomeAcked}) {
		t.Errorf("outcomes of route recovering = %v, want [retried acked]", got)
	}
	if got := e.outcomes.of("failing"); !slices.Equal(got, []consume.Outcome{consume.OutcomeRetried, consume.OutcomeParked}) {
		t.Errorf("outcomes of route failing = %v, want [retried parked]", got)
	}
	if n := recoveringCalls.Load(); n != 2 {
		t.Errorf("recovering handler ran %d times, want 2", n)
	}
	if n := failingCalls.Load(); n != 2 {
		t.Errorf("failing handler ran %d times, want 2", n)
	}

	parked := rabbittest.Drain(t, e.ch, e.names.ParkedQueue(), 1, 30*time.Second)
	if len(parked) != 1 {
		t.Fatalf("parked queue has %d messages, want 1", len(parked))
	}
	if got := parked[0].Headers[consume.HeaderAttempts]; got != int32(2) {
		t.Errorf("%s = %v (%T), want int32 2", consume.HeaderAttempts, got, got)
	}
	if got := parked[0].Headers[consume.HeaderParkedReason]; got != consume.ReasonAttemptsExhausted {
		t.Errorf("%s = %v, want %q", consume.HeaderParkedReason, got, consume.ReasonAttemptsExhausted)
	}
	if got := parked[0].Headers[consume.HeaderRoutingKey]; got != cart.RoutingKey() {
		t.Errorf("%s = %v, want the original routing key %q", consume.HeaderRoutingKey, got, cart.RoutingKey())
	}
	first, _ := parked[0].Headers[consume.HeaderFirstFailedAt].(string)
	last, _ := parked[0].Headers[consume.HeaderLastFailedAt].(string)
	firstAt, err := time.Parse(time.RFC3339Nano, first)
	if err != nil {
		t.Fatalf("%s = %q is not an RFC 3339 time: %v", consume.HeaderFirstFailedAt, first, err)
	}
	lastAt, err := time.Parse(time.RFC3339Nano, last)
	if err != nil {
		t.Fatalf("%s = %q is not an RFC 3339 time: %v", consume.HeaderLastFailedAt, last, err)
	}
	if firstAt.Before(sentAt.Add(-time.Second)) {
		t.Errorf("%s = %s, before the message was published at %s", consume.HeaderFirstFailedAt, firstAt, sentAt)
	}
	if lastAt.Sub(firstAt) < 100*time.Millisecond {
		t.Errorf("%s = %s is less than the 100ms retry delay after %s = %s", consume.HeaderLastFailedAt, lastAt, consume.HeaderFirstFailedAt, firstAt)
	}

	e.stopConsumer()
	for _, route := range []string{"recovering", "failing"} {
		queue := e.names.RouteQueue(route)
		if n := e.readyAfterStop(t, queue); n != 0 {
			t.Errorf("route queue %s has %d messages after the message settled, want 0", queue, n)
		}
	}
	delayQueue := e.names.DelayQueue(100 * time.Millisecond)
	if n := rabbittest.MessageCount(t, e.ch, delayQueue); n != 0 {
		t.Errorf("delay queue %s has %d messages, want 0", delayQueue, n)
	}
}

func TestNewRejectsInvalidRoutes(t *testing.T) {
	names, err := topology.NewNames("webhooks")
	if err != nil {
		t.Fatalf("NewNames: %v", err)
	}
	handler := consume.HandlerFunc(func(context.Context, *contract.Message) error { return nil })
	tests := []struct {
		name   string
		routes []consume.Route
	}{
		{"no routes", nil},
		{"invalid name", []consume.Route{{Route: topology.Route{Name: "Orders"}, Handler: handler}}},
		{"duplicate name", []consume.Route{
			{Route: topology.Route{Name: "orders"}, Handler: handler},
			{Route: topology.Route{Name: "orders"}, Handler: handler},
		}},
		{"no handler", []consume.Route{{Route: topology.Route{Name: "orders"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := consume.New(nil, nil, names, tc.routes, consume.Options{}); err == nil {
				t.Error("New returned nil, want an error")
			}
		})
	}
}
