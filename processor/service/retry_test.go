package service_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
	"github.com/hookbus/hookbus/processor/service"
)

// maxRetryGap bounds the time between two calls of a handler for one
// message. It only catches a message that never comes back from a delay
// queue, so it is far above every delay the tests configure.
const maxRetryGap = 10 * time.Second

// Log messages of the consumer that the tests count.
const (
	logRetrying = "handler failed, retrying later"
	logParking  = "handler failed, parking message"
)

// retryConfig returns testConfig with the given retry delays, no jitter and
// maxAttempts handler calls per message.
func retryConfig(url string, names topology.Names, delays []time.Duration, maxAttempts int) service.Config {
	cfg := testConfig(url, names)
	cfg.RetryDelays = delays
	cfg.RetryJitter = 0
	cfg.MaxAttempts = maxAttempts
	return cfg
}

// callRecorder is a handler that records the time of every call by message
// id and returns what respond returns. The call argument of respond is 1 for
// the first call of a message.
type callRecorder struct {
	respond func(ctx context.Context, msg *contract.Message, call int) error

	mu    sync.Mutex
	calls map[string][]time.Time
}

func newCallRecorder(respond func(ctx context.Context, msg *contract.Message, call int) error) *callRecorder {
	return &callRecorder{respond: respond, calls: map[string][]time.Time{}}
}

func (h *callRecorder) Handle(ctx context.Context, msg *contract.Message) error {
	h.mu.Lock()
	h.calls[msg.ID] = append(h.calls[msg.ID], time.Now())
	call := len(h.calls[msg.ID])
	h.mu.Unlock()
	return h.respond(ctx, msg, call)
}

// times returns the times of the calls for the message id, oldest first.
func (h *callRecorder) times(id string) []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.calls[id]...)
}

// count returns the number of calls for the message id.
func (h *callRecorder) count(id string) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls[id])
}

// messages returns the number of distinct message ids the handler was
// called for.
func (h *callRecorder) messages() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.calls)
}

// requireGaps checks that consecutive calls are at least the matching
// delay apart and at most maxRetryGap.
func requireGaps(t *testing.T, id string, calls []time.Time, delays []time.Duration) {
	t.Helper()
	if len(calls) != len(delays)+1 {
		t.Fatalf("message %s: %d calls, want %d", id, len(calls), len(delays)+1)
	}
	for i, delay := range delays {
		gap := calls[i+1].Sub(calls[i])
		if gap < delay {
			t.Errorf("message %s: call %d came %s after call %d, want at least the retry delay %s", id, i+2, gap, i+1, delay)
		}
		if gap > maxRetryGap {
			t.Errorf("message %s: call %d came %s after call %d, want at most %s", id, i+2, gap, i+1, maxRetryGap)
		}
	}
}

// requireDelaysEmpty fails the test unless every delay queue of the
// schedule has no ready message.
func requireDelaysEmpty(t *testing.T, ch *amqp.Channel, names topology.Names, schedule topology.RetrySchedule) {
	t.Helper()
	for _, ttl := range schedule.TTLs() {
		if n := rabbittest.MessageCount(t, ch, names.DelayQueue(ttl)); n != 0 {
			t.Errorf("delay queue %s holds %d messages, want 0", names.DelayQueue(ttl), n)
		}
	}
}

// requireParkedEmpty fails the test unless the parking lot has no ready
// message.
func requireParkedEmpty(t *testing.T, ch *amqp.Channel, names topology.Names) {
	t.Helper()
	if n := rabbittest.MessageCount(t, ch, names.ParkedQueue()); n != 0 {
		t.Errorf("%s holds %d messages, want 0", names.ParkedQueue(), n)
	}
}

// takeParked takes one message from the parking lot and checks that its id
// and body are unchanged. It also checks the headers that every parked
// message of the route testRoute must carry. These are the reason, the
// number of attempts, the failure times in order, the error text, the route
// and the original routing key.
func takeParked(t *testing.T, ch *amqp.Channel, names topology.Names, sent *contract.Message, reason string, attempts int32, errorText string) amqp.Delivery {
	t.Helper()
	got := rabbittest.Drain(t, ch, names.ParkedQueue(), 1, waitTimeout)
	if len(got) != 1 {
		t.Fatalf("no message in %s within %s", names.ParkedQueue(), waitTimeout)
	}
	d := got[0]

	if d.MessageId != sent.ID {
		t.Errorf("parked message id = %q, want %q", d.MessageId, sent.ID)
	}
	if !bytes.Equal(d.Body, sent.Body) {
		t.Errorf("parked body = %q, want %q", d.Body, sent.Body)
	}
	if got := d.Headers[consume.HeaderParkedReason]; got != reason {
		t.Errorf("header %s = %v, want %q", consume.HeaderParkedReason, got, reason)
	}
	if got := d.Headers[consume.HeaderAttempts]; got != attempts {
		t.Errorf("header %s = %v (%T), want int32 %d", consume.HeaderAttempts, got, got, attempts)
	}
	if got, _ := d.Headers[consume.HeaderError].(string); !strings.Contains(got, errorText) {
		t.Errorf("header %s = %q, want it to contain %q", consume.HeaderError, got, errorText)
	}
	if got := d.Headers[consume.HeaderRoute]; got != testRoute {
		t.Errorf("header %s = %v, want %q", consume.HeaderRoute, got, testRoute)
	}
	if got := d.Headers[consume.HeaderRoutingKey]; got != sent.RoutingKey() {
		t.Errorf("header %s = %v, want the original routing key %q", consume.HeaderRoutingKey, got, sent.RoutingKey())
	}
	if got, ok := d.Headers[consume.HeaderDelay]; ok {
		t.Errorf("parked message has header %s = %v, want none (it selects a delay queue and belongs on retries only)", consume.HeaderDelay, got)
	}
	for _, name := range []string{"x-death", "x-first-death-queue", "x-last-death-queue"} {
		if got, ok := d.Headers[name]; ok {
			t.Errorf("parked message has broker header %s = %v, want it removed", name, got)
		}
	}

	first := headerTime(t, d, consume.HeaderFirstFailedAt)
	last := headerTime(t, d, consume.HeaderLastFailedAt)
	parkedAt := headerTime(t, d, consume.HeaderParkedAt)
	if attempts > 1 && !first.Before(last) {
		t.Errorf("header %s = %s is not before %s = %s after %d attempts", consume.HeaderFirstFailedAt, first, consume.HeaderLastFailedAt, last, attempts)
	}
	if attempts == 1 && !first.Equal(last) {
		t.Errorf("header %s = %s differs from %s = %s after one attempt", consume.HeaderFirstFailedAt, first, consume.HeaderLastFailedAt, last)
	}
	if parkedAt.Before(last) {
		t.Errorf("header %s = %s is before %s = %s", consume.HeaderParkedAt, parkedAt, consume.HeaderLastFailedAt, last)
	}
	return d
}

// headerTime parses the RFC 3339 time in the delivery's header name.
func headerTime(t *testing.T, d amqp.Delivery, name string) time.Time {
	t.Helper()
	value, _ := d.Headers[name].(string)
	parsed, err := time.Parse(time.RFC3339Nano, value)
	if err != nil {
		t.Errorf("header %s = %q is not an RFC 3339 time: %v", name, value, err)
	}
	return parsed
}

// lockedBuffer is a bytes.Buffer that a logger may write to while the test
// reads it.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// records returns the JSON log records written so far.
func (b *lockedBuffer) records(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	var records []map[string]any
	scanner := bufio.NewScanner(bytes.NewReader(b.buf.Bytes()))
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		var record map[string]any
		if err := json.Unmarshal(scanner.Bytes(), &record); err != nil {
			t.Fatalf("log line %q is not JSON: %v", scanner.Text(), err)
		}
		records = append(records, record)
	}
	if err := scanner.Err(); err != nil {
		t.Fatalf("read log: %v", err)
	}
	return records
}

// publishAll publishes the messages to the events exchange and then waits
// for the broker's confirm of each.
func publishAll(t *testing.T, ch *amqp.Channel, names topology.Names, msgs []*contract.Message) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	confirms := make([]*amqp.DeferredConfirmation, 0, len(msgs))
	for _, msg := range msgs {
		p, err := msg.Encode()
		if err != nil {
			t.Fatalf("encode %s: %v", msg.ID, err)
		}
		confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, names.Exchange(), msg.RoutingKey(), false, false, p)
		if err != nil {
			t.Fatalf("publish %s: %v", msg.ID, err)
		}
		confirms = append(confirms, confirm)
	}
	for i, confirm := range confirms {
		acked, err := confirm.WaitContext(ctx)
		if err != nil {
			t.Fatalf("wait for the confirm of %s: %v", msgs[i].ID, err)
		}
		if !acked {
			t.Fatalf("broker nacked %s", msgs[i].ID)
		}
	}
}

func TestRetrySucceedsOnThirdAttempt(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	delays := []time.Duration{300 * time.Millisecond, 600 * time.Millisecond}
	cfg := retryConfig(url, names, delays, 5)
	handler := newCallRecorder(func(_ context.Context, _ *contract.Message, call int) error {
		if call <= 2 {
			return fmt.Errorf("downstream unavailable on call %d", call)
		}
		return nil
	})
	r := start(t, cfg, testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	sent := newMessage()

	publishMessage(t, ch, names, sent)
	waitFor(t, "the third call of the handler", func() bool { return handler.count(sent.ID) >= 3 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}

	calls := handler.times(sent.ID)
	if len(calls) != 3 {
		t.Fatalf("handler called %d times for %s, want 3", len(calls), sent.ID)
	}
	requireGaps(t, sent.ID, calls, delays)
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
	requireDelaysEmpty(t, ch, names, cfg.RetryPolicy().RetrySchedule)
	requireParkedEmpty(t, ch, names)
}

func TestRetryParksPoisonAmongGoodMessages(t *testing.T) {
	const goodMessages = 1000
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	delays := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond}
	cfg := retryConfig(url, names, delays, 4)
	cfg.Concurrency = 32
	cfg.Prefetch = 200
	var logs lockedBuffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	poison := newMessage()
	poison.ID = "poison-" + randomID()
	handler := newCallRecorder(func(_ context.Context, msg *contract.Message, _ int) error {
		if msg.ID == poison.ID {
			return errors.New("order payload references an unknown product")
		}
		return nil
	})
	r := startLogged(t, cfg, logger, testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)

	// The poison goes in the middle, so good messages are queued both
	// before and after it.
	msgs := make([]*contract.Message, 0, goodMessages+1)
	for i := range goodMessages {
		if i == goodMessages/2 {
			msgs = append(msgs, poison)
		}
		msg := newMessage()
		msg.ID = fmt.Sprintf("good-%04d-%s", i, randomID())
		msgs = append(msgs, msg)
	}
	publishAll(t, ch, names, msgs)
	parked := takeParked(t, ch, names, poison, consume.ReasonAttemptsExhausted, 4, "unknown product")
	waitFor(t, "every message to reach the handler", func() bool { return handler.messages() == len(msgs) })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}

	if parked.Headers[consume.HeaderRoutingKey] == names.RouteQueue(testRoute) {
		t.Errorf("header %s is the route queue's name, want the original routing key", consume.HeaderRoutingKey)
	}
	requireGaps(t, poison.ID, handler.times(poison.ID), delays)
	for _, msg := range msgs {
		if msg.ID == poison.ID {
			continue
		}
		if n := handler.count(msg.ID); n != 1 {
			t.Errorf("handler called %d times for %s, want 1", n, msg.ID)
		}
	}
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
	requireDelaysEmpty(t, ch, names, cfg.RetryPolicy().RetrySchedule)
	requireParkedEmpty(t, ch, names)

	// One log line per failed attempt: three retries, then the parking.
	var retryAttempts, parkAttempts []float64
	failureLines := 0
	for _, record := range logs.records(t) {
		message := record[slog.MessageKey]
		if message != logRetrying && message != logParking {
			continue
		}
		failureLines++
		if record["message_id"] != poison.ID {
			t.Errorf("failure logged for message %v, want only %s", record["message_id"], poison.ID)
			continue
		}
		attempt, _ := record["attempt"].(float64)
		if message == logRetrying {
			retryAttempts = append(retryAttempts, attempt)
		} else {
			parkAttempts = append(parkAttempts, attempt)
		}
	}
	if failureLines != 4 {
		t.Errorf("log has %d failure lines, want 4", failureLines)
	}
	if fmt.Sprint(retryAttempts) != "[1 2 3]" {
		t.Errorf("%q lines have attempts %v, want [1 2 3]", logRetrying, retryAttempts)
	}
	if fmt.Sprint(parkAttempts) != "[4]" {
		t.Errorf("%q lines have attempts %v, want [4]", logParking, parkAttempts)
	}
}

func TestRetryParksPermanentErrorAtOnce(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	cfg := retryConfig(url, names, []time.Duration{100 * time.Millisecond}, 5)
	handler := newCallRecorder(func(context.Context, *contract.Message, int) error {
		return consume.Permanent(errors.New("order schema version 1 is no longer accepted"))
	})
	r := start(t, cfg, testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	sent := newMessage()

	publishMessage(t, ch, names, sent)
	takeParked(t, ch, names, sent, consume.ReasonPermanentError, 1, "schema version 1")
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}

	if n := handler.count(sent.ID); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
	requireDelaysEmpty(t, ch, names, cfg.RetryPolicy().RetrySchedule)
	requireParkedEmpty(t, ch, names)
}

func TestRetryParksRepeatedTimeout(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	delays := []time.Duration{100 * time.Millisecond}
	cfg := retryConfig(url, names, delays, 2)
	cfg.HandlerTimeout = 100 * time.Millisecond
	handler := newCallRecorder(func(ctx context.Context, _ *contract.Message, _ int) error {
		<-ctx.Done()
		return ctx.Err()
	})
	r := start(t, cfg, testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	sent := newMessage()

	publishMessage(t, ch, names, sent)
	takeParked(t, ch, names, sent, consume.ReasonTimeout, 2, "timed out after 100ms")
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}

	requireGaps(t, sent.ID, handler.times(sent.ID), delays)
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
	requireDelaysEmpty(t, ch, names, cfg.RetryPolicy().RetrySchedule)
	requireParkedEmpty(t, ch, names)
}

// TestRetryShortDelayOvertakesLongDelay sends message A into the long delay
// queue (its second failure waits 3 s) and then message B into the short
// one (its first failure waits 200 ms). B must come back first.
func TestRetryShortDelayOvertakesLongDelay(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	short, long := 200*time.Millisecond, 3*time.Second
	cfg := retryConfig(url, names, []time.Duration{short, long}, 3)
	a := newMessage()
	a.ID = "a-" + randomID()
	b := newMessage()
	b.ID = "b-" + randomID()
	handler := newCallRecorder(func(_ context.Context, msg *contract.Message, call int) error {
		switch {
		case msg.ID == a.ID && call <= 2:
			return fmt.Errorf("call %d of A fails", call)
		case msg.ID == b.ID && call == 1:
			return errors.New("call 1 of B fails")
		}
		return nil
	})
	r := start(t, cfg, testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	longQueue := names.DelayQueue(long)

	publishMessage(t, ch, names, a)
	waitFor(t, "A to wait in "+longQueue, func() bool { return rabbittest.MessageCount(t, ch, longQueue) == 1 })
	publishMessage(t, ch, names, b)
	waitFor(t, "the third call for A", func() bool { return handler.count(a.ID) >= 3 })
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}

	aCalls := handler.times(a.ID)
	bCalls := handler.times(b.ID)
	requireGaps(t, a.ID, aCalls, []time.Duration{short, long})
	requireGaps(t, b.ID, bCalls, []time.Duration{short})
	if len(aCalls) == 3 && len(bCalls) == 2 {
		if !bCalls[1].Before(aCalls[2]) {
			t.Errorf("B's retry came %s after A's, want it first", bCalls[1].Sub(aCalls[2]))
		}
		if gap := bCalls[1].Sub(bCalls[0]); gap >= long {
			t.Errorf("B's retry came %s after its failure, want less than A's delay %s", gap, long)
		}
	}
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
	requireDelaysEmpty(t, ch, names, cfg.RetryPolicy().RetrySchedule)
	requireParkedEmpty(t, ch, names)
}
