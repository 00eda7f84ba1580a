// Package webhook reads what ingest needs from a provider's webhook request:
// the event type and the provider's delivery id. It reads the headers and
// body fields of GitHub, Stripe, Slack, Shopify and Standard Webhooks senders
// and needs no configuration: headers are checked first, then the body.
package webhook

import (
	"bytes"
	"encoding/json"
	"mime"
	"net/http"
	"net/url"
	"unicode"
	"unicode/utf8"
)

// maxIDLength is the longest provider delivery id that DeliveryID accepts;
// AMQP's message-id property holds at most 255 bytes.
const maxIDLength = 200

// Event is the event type and delivery id that Inspect found in a request.
// Empty fields were not found.
type Event struct {
	// Type is the provider's event type, as sent (for example
	// "orders/create" or "customer.updated").
	Type string
	// DeliveryID is the provider's id of this delivery or event; a
	// redelivery of the same event carries the same id.
	DeliveryID string
}

// Inspect returns the event type and delivery id of a webhook request. It
// reads, in order of precedence:
//   - type: X-GitHub-Event, X-Shopify-Topic, then the body: Slack's
//     event.type inside an event_callback, otherwise the top-level "type"
//     (Stripe, Standard Webhooks, Slack's other payloads);
//   - id: X-GitHub-Delivery, webhook-id, svix-id, X-Shopify-Webhook-Id, then
//     the body: Slack's "event_id", "id" of a Stripe event, or Slack's
//     "trigger_id" of an interaction.
//
// A JSON body may start with a UTF-8 byte-order mark. A form-encoded body
// (application/x-www-form-urlencoded) is read from its "payload" field, as
// GitHub's form content type and Slack's interactivity send it. Inspect never
// fails: what it cannot read stays empty.
func Inspect(header http.Header, body []byte) Event {
	ev := Event{
		Type:       firstHeader(header, "X-GitHub-Event", "X-Shopify-Topic"),
		DeliveryID: firstHeader(header, "X-GitHub-Delivery", "Webhook-Id", "Svix-Id", "X-Shopify-Webhook-Id"),
	}
	if ev.Type == "" || ev.DeliveryID == "" {
		fields := bodyFields(header.Get("Content-Type"), body)
		if ev.Type == "" {
			ev.Type = fields.eventType()
		}
		if ev.DeliveryID == "" {
			ev.DeliveryID = fields.deliveryID()
		}
	}
	if !validID(ev.DeliveryID) {
		ev.DeliveryID = ""
	}
	return ev
}

// payload holds the top-level fields Inspect reads. Each is decoded on its
// own, so that a field of an unexpected JSON type leaves only that field
// empty.
type payload struct {
	Type    json.RawMessage `json:"type"`
	ID      json.RawMessage `json:"id"`
	Object  json.RawMessage `json:"object"`
	EventID json.RawMessage `json:"event_id"`
	Trigger json.RawMessage `json:"trigger_id"`
	Event   json.RawMessage `json:"event"`
}

func (p payload) eventType() string {
	typ := jsonString(p.Type)
	if typ == "event_callback" {
		var inner struct {
			Type json.RawMessage `json:"type"`
		}
		if json.Unmarshal(p.Event, &inner) == nil {
			if t := jsonString(inner.Type); t != "" {
				return t
			}
		}
	}
	return typ
}

func (p payload) deliveryID() string {
	if id := jsonString(p.EventID); id != "" {
		return id
	}
	if jsonString(p.Object) == "event" {
		return jsonString(p.ID)
	}
	// Slack interactivity payloads carry no event id, but each
	// interaction has its own trigger_id.
	return jsonString(p.Trigger)
}

func bodyFields(contentType string, body []byte) payload {
	mediaType, _, _ := mime.ParseMediaType(contentType)
	if mediaType == "application/x-www-form-urlencoded" {
		values, err := url.ParseQuery(string(body))
		if err != nil {
			return payload{}
		}
		body = []byte(values.Get("payload"))
	}

	body = bytes.TrimPrefix(body, []byte("\xef\xbb\xbf"))
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return payload{}
	}
	var p payload
	if err := json.Unmarshal(trimmed, &p); err != nil {
		return payload{}
	}
	return p
}

func jsonString(raw json.RawMessage) string {
	var s string
	if len(raw) == 0 || json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

func firstHeader(header http.Header, names ...string) string {
	for _, name := range names {
		if v := header.Get(name); v != "" {
			return v
		}
	}
	return ""
}

// validID reports whether id can serve as an AMQP message id: valid UTF-8
// without control characters (C0, DEL and C1), at most maxIDLength bytes.
func validID(id string) bool {
	if id == "" || len(id) > maxIDLength || !utf8.ValidString(id) {
		return false
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			return false
		}
	}
	return true
}

// senderHeaders lists, per signature verifier kind, the event type and
// delivery id headers that sender sends. Only these are read for a source of
// that kind: the signature covers the body, not the headers, so a header of
// another provider added to a replayed delivery must not change its id or
// routing.
var senderHeaders = map[string][]string{
	"github":   {"X-GitHub-Event", "X-GitHub-Delivery"},
	"shopify":  {"X-Shopify-Topic", "X-Shopify-Webhook-Id"},
	"standard": {"Webhook-Id", "Svix-Id"},
	"stripe":   nil,
	"slack":    nil,
}

// InspectFor is Inspect for a source whose signatures the verifier of the
// given kind checks ("github", "stripe", "slack", "shopify", "standard"):
// it reads only that sender's headers, and the body. For any other kind
// ("none", "hmac") it reads every header that Inspect reads.
func InspectFor(kind string, header http.Header, body []byte) Event {
	names, known := senderHeaders[kind]
	if !known {
		return Inspect(header, body)
	}
	own := http.Header{}
	for _, name := range append(names, "Content-Type") {
		if values := header.Values(name); len(values) > 0 {
			own[http.CanonicalHeaderKey(name)] = values
		}
	}
	return Inspect(own, body)
}
