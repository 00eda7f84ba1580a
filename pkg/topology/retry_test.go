package topology_test

import (
	"slices"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

func TestRetryScheduleValidate(t *testing.T) {
	tests := []struct {
		name     string
		schedule topology.RetrySchedule
		valid    bool
	}{
		{"default", topology.DefaultRetrySchedule, true},
		{"one delay without jitter", topology.RetrySchedule{Delays: []time.Duration{time.Millisecond}}, true},
		{"maximum jitter", topology.RetrySchedule{Delays: []time.Duration{time.Second}, Jitter: 0.5}, true},
		{"no delays", topology.RetrySchedule{}, false},
		{"delay under 1ms", topology.RetrySchedule{Delays: []time.Duration{time.Second, 999 * time.Microsecond}}, false},
		{"zero delay", topology.RetrySchedule{Delays: []time.Duration{0}}, false},
		{"negative jitter", topology.RetrySchedule{Delays: []time.Duration{time.Second}, Jitter: -0.1}, false},
		{"jitter over 0.5", topology.RetrySchedule{Delays: []time.Duration{time.Second}, Jitter: 0.6}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.schedule.Validate()
			if tc.valid && err != nil {
				t.Errorf("Validate = %v, want nil", err)
			}
			if !tc.valid && err == nil {
				t.Error("Validate = nil, want an error")
			}
		})
	}
}

func TestRetryScheduleTTLs(t *testing.T) {
	schedule := topology.RetrySchedule{
		Delays: []time.Duration{10 * time.Second, time.Minute, 10 * time.Second},
		Jitter: 0.2,
	}
	want := []time.Duration{
		8 * time.Second, 10 * time.Second, 12 * time.Second,
		48 * time.Second, time.Minute, 72 * time.Second,
	}
	if got := schedule.TTLs(); !slices.Equal(got, want) {
		t.Errorf("TTLs() = %v, want %v", got, want)
	}

	noJitter := topology.RetrySchedule{Delays: []time.Duration{time.Minute, time.Second}}
	if got := noJitter.TTLs(); !slices.Equal(got, []time.Duration{time.Second, time.Minute}) {
		t.Errorf("TTLs() without jitter = %v, want [1s 1m0s]", got)
	}
}

func TestRetryScheduleTTL(t *testing.T) {
	schedule := topology.RetrySchedule{
		Delays: []time.Duration{10 * time.Second, time.Minute},
		Jitter: 0.2,
	}
	tests := []struct {
		failures int
		buckets  []time.Duration
	}{
		{0, []time.Duration{8 * time.Second, 10 * time.Second, 12 * time.Second}},
		{1, []time.Duration{8 * time.Second, 10 * time.Second, 12 * time.Second}},
		{2, []time.Duration{48 * time.Second, time.Minute, 72 * time.Second}},
		{9, []time.Duration{48 * time.Second, time.Minute, 72 * time.Second}},
	}
	for _, tc := range tests {
		// TTL picks a bucket at random, so a few hundred calls cover
		// all three with near certainty, and none may fall outside.
		seen := map[time.Duration]bool{}
		for range 300 {
			ttl := schedule.TTL(tc.failures)
			if !slices.Contains(tc.buckets, ttl) {
				t.Fatalf("TTL(%d) = %s, want one of %v", tc.failures, ttl, tc.buckets)
			}
			seen[ttl] = true
		}
		if len(seen) != len(tc.buckets) {
			t.Errorf("TTL(%d) returned only %v in 300 calls, want every bucket of %v", tc.failures, seen, tc.buckets)
		}
	}
}

func TestDelayNames(t *testing.T) {
	names, err := topology.NewNames("prod")
	if err != nil {
		t.Fatalf("NewNames: %v", err)
	}
	if got := names.DelayExchange(); got != "prod.delay" {
		t.Errorf("DelayExchange() = %q, want prod.delay", got)
	}
	if got := names.DelayQueue(12 * time.Second); got != "prod.delay.12000ms" {
		t.Errorf("DelayQueue(12s) = %q, want prod.delay.12000ms", got)
	}
	if got := topology.DelayHeaderValue(1500 * time.Millisecond); got != "1500" {
		t.Errorf("DelayHeaderValue(1.5s) = %q, want 1500", got)
	}
}

func TestDeclareDelaysReturnsToRouteQueue(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, "orders", "audit")
	const ttl = 300 * time.Millisecond
	schedule := topology.RetrySchedule{Delays: []time.Duration{ttl, 10 * time.Second}}
	rabbittest.DeleteDelays(t, url, names, schedule)
	conn := dial(t, url)
	ch := channel(t, conn)
	routes := []topology.Route{
		{Name: "orders", Bindings: []string{"shopify.orders.#"}},
		{Name: "audit", Bindings: []string{"#"}},
	}
	if err := topology.Setup(names, routes...)(conn); err != nil {
		t.Fatalf("Setup: %v", err)
	}

	// Declaring twice must succeed, because every consumer declares its
	// delays.
	for i := range 2 {
		if err := topology.DeclareDelays(ch, names, schedule); err != nil {
			t.Fatalf("DeclareDelays, call %d: %v", i+1, err)
		}
	}
	for _, d := range schedule.TTLs() {
		if err := declarePassive(t, conn, object{true, names.DelayQueue(d)}); err != nil {
			t.Errorf("delay queue %s does not exist: %v", names.DelayQueue(d), err)
		}
	}

	// A retry goes to the delay exchange with the route queue as its
	// routing key, so only that route gets it back, not every route
	// whose binding matches the original routing key.
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("enable confirms: %v", err)
	}
	sent := time.Now()
	publishRetry(t, ch, names.DelayExchange(), names.RouteQueue("orders"), amqp.Publishing{
		MessageId: "retry-1",
		Headers:   amqp.Table{topology.HeaderDelay: topology.DelayHeaderValue(ttl)},
		Body:      []byte(`{"id":1}`),
	})

	got := drainUnacked(t, ch, names.RouteQueue("orders"))
	if waited := time.Since(sent); waited < ttl {
		t.Errorf("message came back after %s, before its TTL of %s", waited, ttl)
	}
	if got.MessageId != "retry-1" {
		t.Errorf("message id = %q, want retry-1", got.MessageId)
	}
	if err := got.Ack(false); err != nil {
		t.Fatalf("ack: %v", err)
	}
	if n := rabbittest.MessageCount(t, ch, names.RouteQueue("audit")); n != 0 {
		t.Errorf("route queue audit has %d messages, want 0: the retry must go to its own route only", n)
	}
	for _, d := range schedule.TTLs() {
		if n := rabbittest.MessageCount(t, ch, names.DelayQueue(d)); n != 0 {
			t.Errorf("delay queue %s has %d messages, want 0", names.DelayQueue(d), n)
		}
	}
}

func TestDeclareDelaysRejectsInvalidSchedule(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url)
	conn := dial(t, url)

	if err := topology.DeclareDelays(channel(t, conn), names, topology.RetrySchedule{}); err == nil {
		t.Error("DeclareDelays with an empty schedule = nil, want an error")
	}
	err := declarePassive(t, conn, object{false, names.DelayExchange()})
	if err == nil {
		t.Error("DeclareDelays declared the delay exchange for an invalid schedule")
	}
}

// publishRetry publishes msg in confirm mode and fails the test unless the
// broker acks it.
func publishRetry(t *testing.T, ch *amqp.Channel, exchange, key string, msg amqp.Publishing) {
	t.Helper()
	confirm, err := ch.PublishWithDeferredConfirm(exchange, key, true, false, msg)
	if err != nil {
		t.Fatalf("publish: %v", err)
	}
	select {
	case <-confirm.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("no confirm within 10s")
	}
	if !confirm.Acked() {
		t.Fatal("broker nacked the message")
	}
}
