package dlq

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// waitTimeout bounds every wait for the broker. It is a deadline for failing
// tests, not an expected duration.
const waitTimeout = 10 * time.Second

// testRoute is the route every test declares.
var testRoute = topology.Route{Name: "github", Bindings: []string{"github.#"}}

// env is a test namespace on the real broker with the shared objects and
// testRoute declared.
type env struct {
	url   string
	names topology.Names
	conn  *amqp.Connection // for the functions under test
	ch    *amqp.Channel    // for the test's own publishing and inspection
}

// newEnv declares a namespace and, unless declareRoute is false, testRoute.
func newEnv(t *testing.T, declareRoute bool) *env {
	t.Helper()
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute.Name)
	ch := rabbittest.Channel(t, url)
	if err := topology.Declare(ch, names); err != nil {
		t.Fatalf("declare topology: %v", err)
	}
	if declareRoute {
		if err := topology.DeclareRoute(ch, names, testRoute); err != nil {
			t.Fatalf("declare route: %v", err)
		}
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("enable confirm mode: %v", err)
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial broker: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return &env{url: url, names: names, conn: conn, ch: ch}
}

// event returns the contract message of a github webhook.
func event(id, eventType string) *contract.Message {
	return &contract.Message{
		ID:          id,
		Source:      "github",
		EventType:   eventType,
		ContentType: "application/json",
		ReceivedAt:  time.Now().Add(-time.Hour).UTC(),
		Header:      map[string][]string{"X-Github-Event": {eventType}},
		Body:        []byte(`{"id":"` + id + `","n":[1,2,3]}`),
	}
}

// publish publishes msg with the mandatory flag and waits for its confirm.
func (e *env) publish(t *testing.T, exchange, key string, msg amqp.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	confirm, err := e.ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, true, false, msg)
	if err != nil {
		t.Fatalf("publish %s: %v", msg.MessageId, err)
	}
	ok, err := confirm.WaitContext(ctx)
	if err != nil || !ok {
		t.Fatalf("confirm of %s: ok=%v, err=%v", msg.MessageId, ok, err)
	}
}

// park publishes m to the parking lot as the processor would after its
// handler failed six times on route testRoute, parkedAgo ago.
func (e *env) park(t *testing.T, m *contract.Message, parkedAgo time.Duration) {
	t.Helper()
	msg, err := m.Encode()
	if err != nil {
		t.Fatalf("encode %s: %v", m.ID, err)
	}
	parkedAt := time.Now().Add(-parkedAgo).UTC()
	msg.Headers[consume.HeaderAttempts] = int32(6)
	msg.Headers[consume.HeaderFirstFailedAt] = parkedAt.Add(-7 * time.Hour).Format(time.RFC3339Nano)
	msg.Headers[consume.HeaderLastFailedAt] = parkedAt.Format(time.RFC3339Nano)
	msg.Headers[consume.HeaderError] = "post to https://ci.example/hooks: 503 Service Unavailable: the upstream is down for maintenance"
	msg.Headers[consume.HeaderRoute] = testRoute.Name
	msg.Headers[consume.HeaderRoutingKey] = m.RoutingKey()
	msg.Headers[consume.HeaderParkedReason] = consume.ReasonAttemptsExhausted
	msg.Headers[consume.HeaderParkedAt] = parkedAt.Format(time.RFC3339Nano)
	msg.Headers[consume.HeaderDelay] = "21600000"
	e.publish(t, e.names.ParkedExchange(), m.RoutingKey(), msg)
}

// parkMany parks count events of the event type with ids "<prefix>-<i>"
// and returns the ids.
func (e *env) parkMany(t *testing.T, prefix, eventType string, count int) []string {
	t.Helper()
	ids := make([]string, count)
	for i := range count {
		ids[i] = fmt.Sprintf("%s-%d", prefix, i)
		e.park(t, event(ids[i], eventType), time.Hour)
	}
	return ids
}

// waitCount waits until queue has want ready messages and fails the test
// with the last count when the deadline passes first.
func (e *env) waitCount(t *testing.T, queue string, want int) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := rabbittest.MessageCount(t, e.ch, queue)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("queue %s has %d ready messages, want %d", queue, got, want)
		}
		time.Sleep(20 * time.Millisecond) // polling interval: the broker sends no notification
	}
}

// drainAll takes and acks every ready message of queue.
func (e *env) drainAll(t *testing.T, queue string) []amqp.Delivery {
	t.Helper()
	n := rabbittest.MessageCount(t, e.ch, queue)
	got := rabbittest.Drain(t, e.ch, queue, n, waitTimeout)
	if len(got) != n {
		t.Fatalf("drained %d of %d messages from %s", len(got), n, queue)
	}
	return got
}

// runCommand runs Run against the test namespace with stdin empty and not
// a terminal, and returns the exit status and output.
func (e *env) runCommand(t *testing.T, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	t.Setenv("HOOKBUS_AMQP_URL", e.url)
	t.Setenv("HOOKBUS_NAMESPACE", e.names.Namespace())
	var out, errOut bytes.Buffer
	status = Run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return status, out.String(), errOut.String()
}

// ids returns the message ids of deliveries.
func ids(deliveries []amqp.Delivery) []string {
	out := make([]string, len(deliveries))
	for i, d := range deliveries {
		out[i] = d.MessageId
	}
	return out
}

// countByID returns how often each id occurs.
func countByID(lists ...[]string) map[string]int {
	counts := map[string]int{}
	for _, list := range lists {
		for _, id := range list {
			counts[id]++
		}
	}
	return counts
}
