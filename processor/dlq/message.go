package dlq

import (
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/topology"
)

// entry is the summary of one message that the commands print and filter.
// The JSON names are the field names of list -json.
type entry struct {
	ID            string    `json:"id"`
	Source        string    `json:"source"`
	Type          string    `json:"type"`
	RoutingKey    string    `json:"routing_key"`
	Route         string    `json:"route,omitempty"`
	Attempts      int       `json:"attempts"`
	Replays       int       `json:"replays"`
	Reason        string    `json:"reason,omitempty"`
	Error         string    `json:"error,omitempty"`
	ReceivedAt    time.Time `json:"received_at,omitzero"`
	FirstFailedAt time.Time `json:"first_failed_at,omitzero"`
	LastFailedAt  time.Time `json:"last_failed_at,omitzero"`
	ParkedAt      time.Time `json:"parked_at,omitzero"`
	// AgeSeconds is the time since ParkedAt (parked queue) or ReceivedAt
	// (unrouted queue); nil when the message carries neither time.
	AgeSeconds  *float64 `json:"age_seconds,omitempty"`
	ContentType string   `json:"content_type,omitempty"`
	BodyBytes   int      `json:"body_bytes"`

	age    time.Duration // AgeSeconds as a duration, valid when hasAge
	hasAge bool
}

// reasonBrokerPrefix starts the reason of a message that the broker
// dead-lettered itself, followed by the x-death reason, for example
// "broker:rejected" or "broker:delivery_limit".
const reasonBrokerPrefix = "broker:"

// newEntry summarises d, read from the queue of kind, at time now.
func newEntry(d *amqp.Delivery, kind queueKind, names topology.Names, now time.Time) entry {
	h := d.Headers
	e := entry{
		ID:            d.MessageId,
		Source:        stringHeader(h[contract.HeaderSource]),
		Type:          d.Type,
		RoutingKey:    d.RoutingKey,
		Route:         stringHeader(h[consume.HeaderRoute]),
		Attempts:      intHeader(h[consume.HeaderAttempts]),
		Replays:       intHeader(h[consume.HeaderReplays]),
		Reason:        stringHeader(h[consume.HeaderParkedReason]),
		Error:         stringHeader(h[consume.HeaderError]),
		ReceivedAt:    timeHeader(h, contract.HeaderReceivedAt, d.Timestamp),
		FirstFailedAt: timeHeader(h, consume.HeaderFirstFailedAt, time.Time{}),
		LastFailedAt:  timeHeader(h, consume.HeaderLastFailedAt, time.Time{}),
		ContentType:   d.ContentType,
		BodyBytes:     len(d.Body),
	}
	if key := stringHeader(h[consume.HeaderRoutingKey]); key != "" {
		e.RoutingKey = key
	}

	since := e.ReceivedAt
	if kind == queueParked {
		e.ParkedAt = timeHeader(h, consume.HeaderParkedAt, time.Time{})
		if death, ok := firstDeath(h); ok {
			// The broker dead-lettered the message without the
			// processor's failure headers, and x-death names the
			// queue it came from.
			if e.Route == "" {
				e.Route, _ = routeOfQueue(names, death.queue)
			}
			if e.Reason == "" {
				e.Reason = reasonBrokerPrefix + death.reason
			}
			if e.ParkedAt.IsZero() {
				e.ParkedAt = death.at
			}
		}
		since = e.ParkedAt
		if since.IsZero() {
			since = d.Timestamp
		}
	}
	if !since.IsZero() {
		e.age = now.Sub(since)
		e.hasAge = true
		seconds := e.age.Seconds()
		e.AgeSeconds = &seconds
	}
	return e
}

// filter selects messages. Its zero value selects every message; each set
// field narrows the selection.
type filter struct {
	source    string
	eventType string
	ids       idList
	route     string
	olderThan time.Duration
	newerThan time.Duration
}

// match reports whether e passes every set field of f. A message without a
// known age matches no age filter.
func (f filter) match(e entry) bool {
	switch {
	case f.source != "" && e.Source != f.source:
		return false
	case f.eventType != "" && e.Type != f.eventType:
		return false
	case len(f.ids) > 0 && !f.ids[e.ID]:
		return false
	case f.route != "" && e.Route != f.route:
		return false
	case f.olderThan > 0 && (!e.hasAge || e.age <= f.olderThan):
		return false
	case f.newerThan > 0 && (!e.hasAge || e.age >= f.newerThan):
		return false
	}
	return true
}

// death is the newest entry of the x-death header, which the broker adds
// when it dead-letters a message.
type death struct {
	queue  string
	reason string
	at     time.Time
}

// firstDeath returns the first entry of the x-death header, which RabbitMQ
// keeps newest first.
func firstDeath(headers amqp.Table) (death, bool) {
	list, ok := headers["x-death"].([]any)
	if !ok || len(list) == 0 {
		return death{}, false
	}
	table, ok := list[0].(amqp.Table)
	if !ok {
		return death{}, false
	}
	at, _ := table["time"].(time.Time)
	return death{
		queue:  stringHeader(table["queue"]),
		reason: stringHeader(table["reason"]),
		at:     at,
	}, true
}

// routeOfQueue returns the route whose queue in the namespace is queue, and
// false when queue is no route queue of the namespace.
func routeOfQueue(names topology.Names, queue string) (string, bool) {
	route, ok := strings.CutPrefix(queue, names.RouteQueue(""))
	if !ok || topology.ValidateRoute(route) != nil {
		return "", false
	}
	return route, true
}

func stringHeader(v any) string {
	switch s := v.(type) {
	case string:
		return s
	case []byte:
		return string(s)
	}
	return ""
}

// intHeader returns an integer header value of any AMQP integer type, and
// 0 when v is missing or not an integer.
func intHeader(v any) int {
	switch n := v.(type) {
	case int8:
		return int(n)
	case uint8:
		return int(n)
	case int16:
		return int(n)
	case uint16:
		return int(n)
	case int32:
		return int(n)
	case uint32:
		return int(n)
	case int64:
		return int(n)
	case int:
		return n
	}
	return 0
}

// timeHeader parses the RFC 3339 header key, and returns fallback when it is
// missing or invalid.
func timeHeader(headers amqp.Table, key string, fallback time.Time) time.Time {
	t, err := time.Parse(time.RFC3339Nano, stringHeader(headers[key]))
	if err != nil {
		return fallback
	}
	return t
}
