package dlq

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/topology"
)

func TestListRemovesNothing(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 3)
	e.parkMany(t, "issues", "issues", 2)
	e.waitCount(t, e.names.ParkedQueue(), 5)

	res, err := list(context.Background(), e.conn, e.names, queueParked, filter{}, 0)
	if err != nil {
		t.Fatalf("list: %v", err)
	}

	if len(res.entries) != 5 {
		t.Errorf("listed %d messages, want 5", len(res.entries))
	}
	if res.read != 5 || res.ready != 5 {
		t.Errorf("read %d of %d ready, want 5 of 5", res.read, res.ready)
	}
	e.waitCount(t, e.names.ParkedQueue(), 5)
	first := res.entries[0]
	if first.ID != "push-0" || first.Source != "github" || first.Type != "push" {
		t.Errorf("first entry = %+v, want push-0 from github of type push", first)
	}
	if first.Attempts != 6 || first.Reason != consume.ReasonAttemptsExhausted || first.Route != testRoute.Name {
		t.Errorf("first entry attempts=%d reason=%q route=%q, want 6, %q, %q", first.Attempts, first.Reason, first.Route, consume.ReasonAttemptsExhausted, testRoute.Name)
	}
	if first.age < 59*time.Minute || first.age > 61*time.Minute {
		t.Errorf("first entry age = %s, want about 1h (from %s)", first.age, consume.HeaderParkedAt)
	}
}

func TestListFiltersAndLimit(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 3)
	e.parkMany(t, "issues", "issues", 2)
	e.park(t, event("old-push", "push"), 48*time.Hour)
	e.waitCount(t, e.names.ParkedQueue(), 6)

	tests := []struct {
		name  string
		f     filter
		limit int
		want  []string
	}{
		{"type", filter{eventType: "issues"}, 0, []string{"issues-0", "issues-1"}},
		{"ids", filter{ids: idList{"push-1": true, "issues-0": true}}, 0, []string{"push-1", "issues-0"}},
		{"older than", filter{olderThan: 24 * time.Hour}, 0, []string{"old-push"}},
		{"newer than and type", filter{newerThan: 24 * time.Hour, eventType: "push"}, 0, []string{"push-0", "push-1", "push-2"}},
		{"route", filter{route: testRoute.Name}, 0, []string{"push-0", "push-1", "push-2", "issues-0", "issues-1", "old-push"}},
		{"other route", filter{route: "gitlab"}, 0, nil},
		{"other source", filter{source: "stripe"}, 0, nil},
		{"limit", filter{eventType: "push"}, 2, []string{"push-0", "push-1"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res, err := list(context.Background(), e.conn, e.names, queueParked, tt.f, tt.limit)
			if err != nil {
				t.Fatalf("list: %v", err)
			}

			var got []string
			for _, entry := range res.entries {
				got = append(got, entry.ID)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("listed %v, want %v", got, tt.want)
			}
			e.waitCount(t, e.names.ParkedQueue(), 6)
		})
	}
}

func TestListJSONOutput(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 2)
	e.parkMany(t, "issues", "issues", 1)
	e.waitCount(t, e.names.ParkedQueue(), 3)

	status, stdout, stderr := e.runCommand(t, "list", "-json", "-type", "push")

	if status != exitOK {
		t.Fatalf("status = %d, want %d; stderr: %s", status, exitOK, stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout), "\n")
	if len(lines) != 2 {
		t.Fatalf("stdout has %d lines, want 2: %s", len(lines), stdout)
	}
	for i, line := range lines {
		var got map[string]any
		if err := json.Unmarshal([]byte(line), &got); err != nil {
			t.Fatalf("line %d is not JSON: %v: %s", i+1, err, line)
		}
		if got["type"] != "push" || got["source"] != "github" || got["route"] != testRoute.Name {
			t.Errorf("line %d = %v, want type push, source github, route %s", i+1, got, testRoute.Name)
		}
		if got["attempts"] != float64(6) {
			t.Errorf("line %d attempts = %v, want 6", i+1, got["attempts"])
		}
		if _, ok := got["parked_at"].(string); !ok {
			t.Errorf("line %d has no parked_at: %s", i+1, line)
		}
	}
	if !strings.Contains(stderr, "2 of 3 messages read from "+e.names.ParkedQueue()+" matched") {
		t.Errorf("stderr does not say how many matched: %s", stderr)
	}
	e.waitCount(t, e.names.ParkedQueue(), 3)
}

func TestListTable(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 1)
	e.waitCount(t, e.names.ParkedQueue(), 1)

	status, stdout, stderr := e.runCommand(t, "list")

	if status != exitOK {
		t.Fatalf("status = %d, want %d; stderr: %s", status, exitOK, stderr)
	}
	for _, want := range []string{"ID", "LAST ERROR", "push-0", "attempts-exhausted", "1h0m", "post to https://ci.example/hooks: 503 Service Unavailable..."} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table does not contain %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "maintenance") {
		t.Errorf("table shows the whole error, want it cut to %d characters:\n%s", maxErrorColumn, stdout)
	}
}

func TestReplayByType(t *testing.T) {
	e := newEnv(t, true)
	pushIDs := e.parkMany(t, "push", "push", 20)
	issueIDs := e.parkMany(t, "issues", "issues", 30)
	e.waitCount(t, e.names.ParkedQueue(), 50)

	status, _, stderr := e.runCommand(t, "replay", "-type", "push")

	if status != exitOK {
		t.Fatalf("status = %d, want %d; stderr: %s", status, exitOK, stderr)
	}
	if !strings.Contains(stderr, "replayed 20 of 20 matching messages (50 read from "+e.names.ParkedQueue()) {
		t.Errorf("summary missing or wrong: %s", stderr)
	}
	e.waitCount(t, e.names.RouteQueue(testRoute.Name), 20)
	e.waitCount(t, e.names.ParkedQueue(), 30)

	replayed := e.drainAll(t, e.names.RouteQueue(testRoute.Name))
	if got := ids(replayed); !slices.Equal(got, pushIDs) {
		t.Errorf("route queue ids = %v, want %v", got, pushIDs)
	}
	for _, d := range replayed {
		checkReplayedCopy(t, d)
	}
	parked := e.drainAll(t, e.names.ParkedQueue())
	if got := ids(parked); !slices.Equal(got, issueIDs) {
		t.Errorf("parked ids = %v, want %v", got, issueIDs)
	}
}

// checkReplayedCopy checks that d is the copy of a message that park
// published: same body and id, fresh attempts, one replay.
func checkReplayedCopy(t *testing.T, d amqp.Delivery) {
	t.Helper()
	want := event(d.MessageId, d.Type)
	if !bytes.Equal(d.Body, want.Body) {
		t.Errorf("%s: body = %s, want %s", d.MessageId, d.Body, want.Body)
	}
	if d.Headers[consume.HeaderReplays] != int32(1) {
		t.Errorf("%s: %s = %#v, want int32(1)", d.MessageId, consume.HeaderReplays, d.Headers[consume.HeaderReplays])
	}
	for _, dropped := range []string{
		consume.HeaderAttempts, consume.HeaderFirstFailedAt, consume.HeaderLastFailedAt, consume.HeaderError,
		consume.HeaderParkedReason, consume.HeaderParkedAt, consume.HeaderDelay,
	} {
		if v, ok := d.Headers[dropped]; ok {
			t.Errorf("%s: copy has %s = %v, want it dropped", d.MessageId, dropped, v)
		}
	}
	if d.Headers[consume.HeaderRoute] != testRoute.Name {
		t.Errorf("%s: %s = %v, want %s", d.MessageId, consume.HeaderRoute, d.Headers[consume.HeaderRoute], testRoute.Name)
	}
	if d.Headers[consume.HeaderRoutingKey] != want.RoutingKey() {
		t.Errorf("%s: %s = %v, want %s", d.MessageId, consume.HeaderRoutingKey, d.Headers[consume.HeaderRoutingKey], want.RoutingKey())
	}
	if _, err := contract.Decode(&d); err != nil {
		t.Errorf("%s: copy breaks the contract: %v", d.MessageId, err)
	}
}

func TestReplayDryRunChangesNothing(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 3)
	e.waitCount(t, e.names.ParkedQueue(), 3)

	status, stdout, stderr := e.runCommand(t, "replay", "-dry-run")

	if status != exitOK {
		t.Fatalf("status = %d, want %d; stderr: %s", status, exitOK, stderr)
	}
	for _, want := range []string{"push-0", "push-2", e.names.RouteQueue(testRoute.Name)} {
		if !strings.Contains(stdout, want) {
			t.Errorf("dry run output does not contain %q:\n%s", want, stdout)
		}
	}
	e.waitCount(t, e.names.ParkedQueue(), 3)
	if n := e.routeCount(t); n != 0 {
		t.Errorf("route queue has %d messages after a dry run, want 0", n)
	}
	for _, d := range e.drainAll(t, e.names.ParkedQueue()) {
		if _, ok := d.Headers[consume.HeaderReplays]; ok {
			t.Errorf("%s: parked message gained %s in a dry run", d.MessageId, consume.HeaderReplays)
		}
	}
}

func (e *env) routeCount(t *testing.T) int {
	t.Helper()
	q, err := e.ch.QueueDeclarePassive(e.names.RouteQueue(testRoute.Name), true, false, false, false, nil)
	if err != nil {
		t.Fatalf("inspect route queue: %v", err)
	}
	return q.Messages
}

func TestReplayInterruptedLosesNothing(t *testing.T) {
	e := newEnv(t, true)
	all := e.parkMany(t, "push", "push", 50)
	e.waitCount(t, e.names.ParkedQueue(), 50)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opts := replayOptions{afterConfirm: func(n int) {
		if n == 10 {
			cancel()
		}
	}}
	res, err := replay(ctx, e.conn, e.names, queueParked, filter{}, opts)

	if !errors.Is(err, context.Canceled) {
		t.Errorf("replay error = %v, want context.Canceled", err)
	}
	if res.replayed < 10 || res.replayed > 11 {
		t.Errorf("replayed %d, want 10 or 11 (the one in flight)", res.replayed)
	}
	e.waitCount(t, e.names.ParkedQueue(), 50-res.replayed)
	parked := ids(e.drainAll(t, e.names.ParkedQueue()))
	routed := ids(e.drainAll(t, e.names.RouteQueue(testRoute.Name)))
	counts := countByID(parked, routed)
	duplicates := 0
	for _, id := range all {
		switch counts[id] {
		case 0:
			t.Errorf("message %s is lost", id)
		case 1:
		default:
			duplicates += counts[id] - 1
		}
	}
	if duplicates > 1 {
		t.Errorf("%d duplicates, want at most 1", duplicates)
	}
	if len(counts) != len(all) {
		t.Errorf("found %d distinct ids, want %d", len(counts), len(all))
	}
}

func TestReplayBrokerDeadLettered(t *testing.T) {
	e := newEnv(t, true)
	m := event("rejected-1", "push")
	msg, err := m.Encode()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	e.publish(t, e.names.Exchange(), m.RoutingKey(), msg)
	e.waitCount(t, e.names.RouteQueue(testRoute.Name), 1)
	d, ok, err := e.ch.Get(e.names.RouteQueue(testRoute.Name), false)
	if err != nil || !ok {
		t.Fatalf("get from route queue: ok=%v, err=%v", ok, err)
	}
	if err := d.Reject(false); err != nil {
		t.Fatalf("reject: %v", err)
	}
	e.waitCount(t, e.names.ParkedQueue(), 1)

	listed, err := list(context.Background(), e.conn, e.names, queueParked, filter{route: testRoute.Name}, 0)
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if len(listed.entries) != 1 || listed.entries[0].Reason != "broker:rejected" {
		t.Errorf("listed %+v, want one entry with reason broker:rejected", listed.entries)
	}
	// The broker returns listed messages to the queue after the channel
	// closed, so wait for it before the replay counts the ready messages.
	e.waitCount(t, e.names.ParkedQueue(), 1)
	res, err := replay(context.Background(), e.conn, e.names, queueParked, filter{}, replayOptions{})
	if err != nil {
		t.Fatalf("replay: %v", err)
	}

	if res.replayed != 1 || len(res.skipped) != 0 {
		t.Errorf("replayed %d, skipped %v, want 1 replayed", res.replayed, res.skipped)
	}
	e.waitCount(t, e.names.RouteQueue(testRoute.Name), 1)
	e.waitCount(t, e.names.ParkedQueue(), 0)
	got := e.drainAll(t, e.names.RouteQueue(testRoute.Name))[0]
	if got.MessageId != m.ID || !bytes.Equal(got.Body, m.Body) {
		t.Errorf("route queue has %s with body %s, want %s with %s", got.MessageId, got.Body, m.ID, m.Body)
	}
	if _, ok := got.Headers["x-death"]; ok {
		t.Errorf("copy kept x-death: %v", got.Headers["x-death"])
	}
	if got.Headers[consume.HeaderReplays] != int32(1) {
		t.Errorf("%s = %#v, want int32(1)", consume.HeaderReplays, got.Headers[consume.HeaderReplays])
	}
	if got.Headers[consume.HeaderRoutingKey] != m.RoutingKey() {
		t.Errorf("%s = %v, want %s", consume.HeaderRoutingKey, got.Headers[consume.HeaderRoutingKey], m.RoutingKey())
	}
}

func TestReplaySkipsMessageWithoutRoute(t *testing.T) {
	e := newEnv(t, true)
	m := event("no-route", "push")
	msg, err := m.Encode()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	e.publish(t, e.names.ParkedExchange(), m.RoutingKey(), msg)
	e.waitCount(t, e.names.ParkedQueue(), 1)

	status, _, stderr := e.runCommand(t, "replay")

	if status != exitFailed {
		t.Errorf("status = %d, want %d; stderr: %s", status, exitFailed, stderr)
	}
	if !strings.Contains(stderr, `skipped message "no-route"`) {
		t.Errorf("stderr does not warn about the skipped message: %s", stderr)
	}
	e.waitCount(t, e.names.ParkedQueue(), 1)
	if n := e.routeCount(t); n != 0 {
		t.Errorf("route queue has %d messages, want 0", n)
	}
}

func TestReplayToMissingRouteQueue(t *testing.T) {
	e := newEnv(t, true)
	m := event("gone-1", "push")
	msg, err := m.Encode()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	msg.Headers[consume.HeaderRoute] = "removed"
	e.publish(t, e.names.ParkedExchange(), m.RoutingKey(), msg)
	e.waitCount(t, e.names.ParkedQueue(), 1)

	res, err := replay(context.Background(), e.conn, e.names, queueParked, filter{}, replayOptions{})

	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if len(res.failed) != 1 || !errors.Is(res.failed[0].err, errReturned) {
		t.Errorf("failed = %v, want one message returned as unroutable", res.failed)
	}
	if res.replayed != 0 {
		t.Errorf("replayed %d, want 0", res.replayed)
	}
	e.waitCount(t, e.names.ParkedQueue(), 1)
}

func TestReplayUnrouted(t *testing.T) {
	e := newEnv(t, false)
	routed := event("late-route", "push")
	unmatched := &contract.Message{ID: "nobody-listens", Source: "gitlab", EventType: "push", ReceivedAt: time.Now(), Body: []byte("{}")}
	for _, m := range []*contract.Message{routed, unmatched} {
		msg, err := m.Encode()
		if err != nil {
			t.Fatalf("encode: %v", err)
		}
		e.publish(t, e.names.Exchange(), m.RoutingKey(), msg)
	}
	e.waitCount(t, e.names.UnroutedQueue(), 2)
	if err := topology.DeclareRoute(e.ch, e.names, testRoute); err != nil {
		t.Fatalf("declare route: %v", err)
	}

	res, err := replay(context.Background(), e.conn, e.names, queueUnrouted, filter{}, replayOptions{})

	if err != nil {
		t.Fatalf("replay: %v", err)
	}
	if res.read != 2 || res.replayed != 2 {
		t.Errorf("read %d, replayed %d, want 2 and 2", res.read, res.replayed)
	}
	e.waitCount(t, e.names.RouteQueue(testRoute.Name), 1)
	e.waitCount(t, e.names.UnroutedQueue(), 1)
	got := e.drainAll(t, e.names.RouteQueue(testRoute.Name))[0]
	if got.MessageId != routed.ID || got.RoutingKey != routed.RoutingKey() {
		t.Errorf("route queue has %s with key %s, want %s with %s", got.MessageId, got.RoutingKey, routed.ID, routed.RoutingKey())
	}
	back := e.drainAll(t, e.names.UnroutedQueue())[0]
	if back.MessageId != unmatched.ID {
		t.Errorf("unrouted queue has %s, want %s", back.MessageId, unmatched.ID)
	}
	// Handled once: a second pass over the returned copy would make it 2.
	if back.Headers[consume.HeaderReplays] != int32(1) {
		t.Errorf("%s of the unmatched event = %#v, want int32(1)", consume.HeaderReplays, back.Headers[consume.HeaderReplays])
	}
}

func TestPurgeWithFilterDeletesOnlyMatches(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 4)
	e.waitCount(t, e.names.ParkedQueue(), 4)

	status, _, stderr := e.runCommand(t, "purge", "-yes", "-id", "push-1,push-3")

	if status != exitOK {
		t.Fatalf("status = %d, want %d; stderr: %s", status, exitOK, stderr)
	}
	if !strings.Contains(stderr, "deleted 2 of 2 matching messages") {
		t.Errorf("summary missing or wrong: %s", stderr)
	}
	e.waitCount(t, e.names.ParkedQueue(), 2)
	if got := ids(e.drainAll(t, e.names.ParkedQueue())); !slices.Equal(got, []string{"push-0", "push-2"}) {
		t.Errorf("parked ids = %v, want [push-0 push-2]", got)
	}
}

func TestPurgeWithoutYesOrTerminal(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 2)
	e.waitCount(t, e.names.ParkedQueue(), 2)

	status, _, stderr := e.runCommand(t, "purge")

	if status != exitUsage {
		t.Errorf("status = %d, want %d", status, exitUsage)
	}
	if !strings.Contains(stderr, "pass -yes") {
		t.Errorf("stderr does not say to pass -yes: %s", stderr)
	}
	e.waitCount(t, e.names.ParkedQueue(), 2)
}

func TestPurgeYesDeletesAll(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 3)
	e.waitCount(t, e.names.ParkedQueue(), 3)

	status, _, stderr := e.runCommand(t, "purge", "-yes")

	if status != exitOK {
		t.Fatalf("status = %d, want %d; stderr: %s", status, exitOK, stderr)
	}
	e.waitCount(t, e.names.ParkedQueue(), 0)
}

func TestPurgeConfirmation(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 3)
	e.parkMany(t, "issues", "issues", 2)
	e.waitCount(t, e.names.ParkedQueue(), 5)
	f := filter{eventType: "issues"}

	var prompted []int
	declined, err := purge(context.Background(), e.conn, e.names, queueParked, f, func(n int) (bool, error) {
		prompted = append(prompted, n)
		return false, nil
	})
	if err != nil {
		t.Fatalf("purge declined: %v", err)
	}
	if declined.deleted != 0 {
		t.Errorf("deleted %d after the answer no, want 0", declined.deleted)
	}
	e.waitCount(t, e.names.ParkedQueue(), 5)

	accepted, err := purge(context.Background(), e.conn, e.names, queueParked, f, func(n int) (bool, error) {
		prompted = append(prompted, n)
		return true, nil
	})
	if err != nil {
		t.Fatalf("purge accepted: %v", err)
	}

	if !slices.Equal(prompted, []int{2, 2}) {
		t.Errorf("prompted for %v messages, want [2 2]", prompted)
	}
	if accepted.deleted != 2 {
		t.Errorf("deleted %d, want 2", accepted.deleted)
	}
	e.waitCount(t, e.names.ParkedQueue(), 3)
	for _, d := range e.drainAll(t, e.names.ParkedQueue()) {
		if d.Type != "push" {
			t.Errorf("message %s of type %s was not deleted", d.MessageId, d.Type)
		}
	}
}

func TestRunMissingQueue(t *testing.T) {
	e := newEnv(t, true)
	t.Setenv("HOOKBUS_AMQP_URL", e.url)
	t.Setenv("HOOKBUS_NAMESPACE", e.names.Namespace()+"-missing")
	var stdout, stderr bytes.Buffer

	status := Run(context.Background(), []string{"list"}, strings.NewReader(""), &stdout, &stderr)

	if status != exitFailed {
		t.Errorf("status = %d, want %d", status, exitFailed)
	}
	if !strings.Contains(stderr.String(), "not found: check HOOKBUS_NAMESPACE") {
		t.Errorf("stderr does not say what to check: %s", stderr.String())
	}
}

func TestRunTriesEveryURL(t *testing.T) {
	e := newEnv(t, true)
	e.parkMany(t, "push", "push", 1)
	e.waitCount(t, e.names.ParkedQueue(), 1)
	t.Setenv("HOOKBUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/,"+e.url)
	t.Setenv("HOOKBUS_NAMESPACE", e.names.Namespace())
	var stdout, stderr bytes.Buffer

	status := Run(context.Background(), []string{"list", "-json"}, strings.NewReader(""), &stdout, &stderr)

	if status != exitOK {
		t.Errorf("status = %d, want %d; stderr: %s", status, exitOK, stderr.String())
	}
	if !strings.Contains(stdout.String(), `"id":"push-0"`) {
		t.Errorf("stdout does not list push-0: %s", stdout.String())
	}
}
