package dlq

import (
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/topology"
)

func testNames(t *testing.T) topology.Names {
	t.Helper()
	names, err := topology.NewNames("webhooks")
	if err != nil {
		t.Fatal(err)
	}
	return names
}

func TestNewEntryDeadLetteredByBroker(t *testing.T) {
	names := testNames(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	d := &amqp.Delivery{
		MessageId:  "m1",
		Type:       "push",
		RoutingKey: "github.push",
		Timestamp:  now.Add(-48 * time.Hour),
		Headers: amqp.Table{
			"hookbus-source": "github",
			"x-death": []any{
				amqp.Table{"queue": "webhooks.route.ci", "reason": "delivery_limit", "time": now.Add(-2 * time.Hour)},
				amqp.Table{"queue": "webhooks.delay.10000ms", "reason": "expired", "time": now.Add(-3 * time.Hour)},
			},
		},
	}

	e := newEntry(d, queueParked, names, now)

	if e.Route != "ci" {
		t.Errorf("route = %q, want ci (from the first x-death entry)", e.Route)
	}
	if e.Reason != "broker:delivery_limit" {
		t.Errorf("reason = %q, want broker:delivery_limit", e.Reason)
	}
	if !e.hasAge || e.age != 2*time.Hour {
		t.Errorf("age = %s (known %v), want 2h from the x-death time", e.age, e.hasAge)
	}
}

func TestNewEntryForeignDeadLetterQueue(t *testing.T) {
	names := testNames(t)
	d := &amqp.Delivery{Headers: amqp.Table{
		"x-death": []any{amqp.Table{"queue": "other.route.ci", "reason": "rejected"}},
	}}

	e := newEntry(d, queueParked, names, time.Now())

	if e.Route != "" {
		t.Errorf("route = %q, want none for a queue of another namespace", e.Route)
	}
	if _, _, err := destination(d, e, queueParked, names); err == nil {
		t.Error("destination found for a message without a route")
	}
}

func TestNewEntryAgeSources(t *testing.T) {
	names := testNames(t)
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	received := now.Add(-5 * time.Hour).Format(time.RFC3339Nano)
	parked := now.Add(-time.Hour).Format(time.RFC3339Nano)
	tests := []struct {
		name    string
		kind    queueKind
		headers amqp.Table
		stamp   time.Time
		want    time.Duration
		known   bool
	}{
		{"parked at", queueParked, amqp.Table{"hookbus-parked-at": parked, "hookbus-received-at": received}, time.Time{}, time.Hour, true},
		{"parked without header", queueParked, amqp.Table{}, now.Add(-3 * time.Hour), 3 * time.Hour, true},
		{"received at", queueUnrouted, amqp.Table{"hookbus-received-at": received}, now.Add(-time.Minute), 5 * time.Hour, true},
		{"received without header", queueUnrouted, amqp.Table{}, now.Add(-time.Minute), time.Minute, true},
		{"no time at all", queueUnrouted, amqp.Table{}, time.Time{}, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := &amqp.Delivery{Headers: tt.headers, Timestamp: tt.stamp}

			e := newEntry(d, tt.kind, names, now)

			if e.hasAge != tt.known || e.age != tt.want {
				t.Errorf("age = %s (known %v), want %s (known %v)", e.age, e.hasAge, tt.want, tt.known)
			}
		})
	}
}

func TestFilterMatch(t *testing.T) {
	e := entry{ID: "a", Source: "github", Type: "push", Route: "ci", age: time.Hour, hasAge: true}
	noAge := entry{ID: "b"}
	tests := []struct {
		name  string
		f     filter
		entry entry
		want  bool
	}{
		{"empty", filter{}, e, true},
		{"source", filter{source: "github"}, e, true},
		{"other source", filter{source: "stripe"}, e, false},
		{"type", filter{eventType: "push"}, e, true},
		{"other type", filter{eventType: "issues"}, e, false},
		{"id", filter{ids: idList{"x": true, "a": true}}, e, true},
		{"other id", filter{ids: idList{"x": true}}, e, false},
		{"route", filter{route: "ci"}, e, true},
		{"other route", filter{route: "billing"}, e, false},
		{"older than", filter{olderThan: 30 * time.Minute}, e, true},
		{"not older than", filter{olderThan: 2 * time.Hour}, e, false},
		{"newer than", filter{newerThan: 2 * time.Hour}, e, true},
		{"not newer than", filter{newerThan: 30 * time.Minute}, e, false},
		{"all fields", filter{source: "github", eventType: "push", route: "ci", olderThan: time.Minute, newerThan: 2 * time.Hour}, e, true},
		{"one field fails", filter{source: "github", eventType: "issues"}, e, false},
		{"age unknown", filter{olderThan: time.Minute}, noAge, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.f.match(tt.entry); got != tt.want {
				t.Errorf("match = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestReplayCopyHeaders(t *testing.T) {
	d := &amqp.Delivery{
		MessageId:  "m1",
		Type:       "push",
		RoutingKey: "github.push",
		UserId:     "someone-else",
		Body:       []byte("body"),
		Headers: amqp.Table{
			"hookbus-source":               "github",
			"http.x-github-event":          "push",
			consume.HeaderAttempts:         int32(3),
			consume.HeaderReplays:          int32(2),
			consume.HeaderRoute:            "ci",
			consume.HeaderRoutingKey:       "github.push",
			consume.HeaderError:            "boom",
			consume.HeaderDelay:            "10000",
			"x-death":                      []any{},
			"x-first-death-queue":          "webhooks.route.ci",
			"x-last-death-reason":          "rejected",
			consume.HeaderParkedAt:         "2026-05-01T12:00:00Z",
			consume.HeaderParkedReason:     "timeout",
			consume.HeaderFirstFailedAt:    "2026-05-01T11:00:00Z",
			consume.HeaderLastFailedAt:     "2026-05-01T12:00:00Z",
			"hookbus-verified-by":          "hmac-sha256",
			"hookbus-received-at":          "2026-05-01T10:00:00Z",
			"hookbus-contract":             "1",
			"hookbus-something-from-later": "kept",
		},
	}

	msg := replayCopy(d, entry{RoutingKey: "github.push"}, queueParked)

	want := []string{"hookbus-source", "http.x-github-event", consume.HeaderRoute, consume.HeaderRoutingKey, "hookbus-verified-by", "hookbus-received-at", "hookbus-contract", "hookbus-something-from-later", consume.HeaderReplays}
	for _, name := range want {
		if _, ok := msg.Headers[name]; !ok {
			t.Errorf("copy lost header %s", name)
		}
	}
	if len(msg.Headers) != len(want) {
		t.Errorf("copy has %d headers, want %d: %v", len(msg.Headers), len(want), msg.Headers)
	}
	if msg.Headers[consume.HeaderReplays] != int32(3) {
		t.Errorf("%s = %#v, want int32(3)", consume.HeaderReplays, msg.Headers[consume.HeaderReplays])
	}
	if msg.UserId != "" {
		t.Errorf("user id = %q, want it left out", msg.UserId)
	}
	if msg.MessageId != "m1" || msg.Type != "push" || string(msg.Body) != "body" || msg.DeliveryMode != amqp.Persistent {
		t.Errorf("copy = %+v, want the id, type and body of the original, persistent", msg)
	}
}

func TestReplayCopyAddsRoutingKey(t *testing.T) {
	d := &amqp.Delivery{RoutingKey: "github.push", Headers: amqp.Table{}}

	parked := replayCopy(d, entry{RoutingKey: "github.push"}, queueParked)
	unrouted := replayCopy(d, entry{RoutingKey: "github.push"}, queueUnrouted)

	if parked.Headers[consume.HeaderRoutingKey] != "github.push" {
		t.Errorf("parked copy %s = %v, want github.push", consume.HeaderRoutingKey, parked.Headers[consume.HeaderRoutingKey])
	}
	if _, ok := unrouted.Headers[consume.HeaderRoutingKey]; ok {
		t.Errorf("unrouted copy has %s, want none (it keeps its routing key)", consume.HeaderRoutingKey)
	}
}

func TestFormatAge(t *testing.T) {
	tests := []struct {
		age  time.Duration
		want string
	}{
		{1500 * time.Millisecond, "1s"},
		{12*time.Minute + 30*time.Second, "12m30s"},
		{3*time.Hour + 4*time.Minute + 5*time.Second, "3h4m"},
		{53 * time.Hour, "2d5h"},
		{-time.Second, "0s"},
	}
	for _, tt := range tests {
		if got := formatAge(entry{age: tt.age, hasAge: true}); got != tt.want {
			t.Errorf("formatAge(%s) = %q, want %q", tt.age, got, tt.want)
		}
	}
	if got := formatAge(entry{}); got != "-" {
		t.Errorf("formatAge of unknown age = %q, want -", got)
	}
}

func TestShorten(t *testing.T) {
	if got := shorten("line one\nline\ttwo", 60); got != "line one line two" {
		t.Errorf("shorten joined lines into %q", got)
	}
	if got := shorten("äöüäöüäöüä", 8); got != "äöüäö..." {
		t.Errorf("shorten = %q, want 8 characters ending in ...", got)
	}
}
