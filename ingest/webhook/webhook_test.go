package webhook_test

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hookbus/hookbus/ingest/webhook"
)

// fixtureDir contains real provider request bodies. Its README lists the
// headers each delivery arrives with.
var fixtureDir = filepath.Join("..", "testdata", "webhooks")

// readFixture returns the bytes of a body file under fixtureDir.
func readFixture(tb testing.TB, name string) []byte {
	tb.Helper()
	body, err := os.ReadFile(filepath.Join(fixtureDir, filepath.FromSlash(name)))
	if err != nil {
		tb.Fatalf("read fixture: %v", err)
	}
	return body
}

// headerOf builds an http.Header from name-value pairs, canonicalising the
// names as net/http does for a received request.
func headerOf(pairs ...string) http.Header {
	h := http.Header{}
	for i := 0; i+1 < len(pairs); i += 2 {
		h.Add(pairs[i], pairs[i+1])
	}
	return h
}

func TestInspect(t *testing.T) {
	const (
		githubDelivery  = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
		shopifyDelivery = "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"
		standardID      = "msg_p5jXN8AQM9LWM0D4loKWxJek"
		slackTrigger    = "111.222.valid"
	)
	id200 := strings.Repeat("a", 200)
	id201 := strings.Repeat("a", 201)

	tests := []struct {
		name   string
		header http.Header
		body   []byte
		want   webhook.Event
	}{
		{
			name: "github push headers",
			header: headerOf(
				"Content-Type", "application/json",
				"X-GitHub-Event", "push",
				"X-GitHub-Delivery", githubDelivery,
			),
			body: readFixture(t, "github/push.json"),
			want: webhook.Event{Type: "push", DeliveryID: githubDelivery},
		},
		{
			name: "github form content type",
			header: headerOf(
				"Content-Type", "application/x-www-form-urlencoded",
				"X-GitHub-Event", "ping",
				"X-GitHub-Delivery", githubDelivery,
			),
			body: []byte(`payload=%7B%22zen%22%3A%22Keep+it+logically+awesome.%22%7D`),
			want: webhook.Event{Type: "ping", DeliveryID: githubDelivery},
		},
		{
			name: "shopify topic and webhook id",
			header: headerOf(
				"Content-Type", "application/json",
				"X-Shopify-Topic", "orders/create",
				"X-Shopify-Webhook-Id", shopifyDelivery,
				"X-Shopify-Event-Id", "98880550-7158-44d4-b7cd-2c97c8a091b5",
			),
			body: readFixture(t, "shopify/orders.create.json"),
			want: webhook.Event{Type: "orders/create", DeliveryID: shopifyDelivery},
		},
		{
			name:   "stripe event body",
			header: headerOf("Content-Type", "application/json; charset=utf-8"),
			body:   readFixture(t, "stripe/invoice.paid.json"),
			want:   webhook.Event{Type: "invoice.paid", DeliveryID: "evt_1KJrGtJDPojXS6LN15fcthM3"},
		},
		{
			name:   "stripe payment intent body",
			header: headerOf("Content-Type", "application/json; charset=utf-8"),
			body:   readFixture(t, "stripe/payment_intent.succeeded.json"),
			want:   webhook.Event{Type: "payment_intent.succeeded", DeliveryID: "evt_1IlYUUJDPojXS6LN7NEWYSm2"},
		},
		{
			name:   "id of non-event object ignored",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"id":"cus_123","object":"customer","type":"individual"}`),
			want:   webhook.Event{Type: "individual"},
		},
		{
			name:   "slack event_callback",
			header: headerOf("Content-Type", "application/json"),
			body:   readFixture(t, "slack/event_callback.app_mention.json"),
			want:   webhook.Event{Type: "app_mention", DeliveryID: "Ev111"},
		},
		{
			name:   "slack channel message",
			header: headerOf("Content-Type", "application/json"),
			body:   readFixture(t, "slack/event_callback.message.channels.json"),
			want:   webhook.Event{Type: "message", DeliveryID: "Ev111"},
		},
		{
			name:   "slack event_callback without event type",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":"event_callback","event_id":"Ev222","event":{"user":"U1"}}`),
			want:   webhook.Event{Type: "event_callback", DeliveryID: "Ev222"},
		},
		{
			name:   "slack event_callback with null event",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":"event_callback","event_id":"Ev333","event":null}`),
			want:   webhook.Event{Type: "event_callback", DeliveryID: "Ev333"},
		},
		{
			name:   "slack url_verification",
			header: headerOf("Content-Type", "application/json"),
			body:   readFixture(t, "slack/url_verification.json"),
			want:   webhook.Event{Type: "url_verification"},
		},
		{
			name:   "slack block_actions form",
			header: headerOf("Content-Type", "application/x-www-form-urlencoded"),
			body:   readFixture(t, "slack/block_actions.form"),
			want:   webhook.Event{Type: "block_actions", DeliveryID: slackTrigger},
		},
		{
			name:   "form content type with charset",
			header: headerOf("Content-Type", "application/x-www-form-urlencoded; charset=UTF-8"),
			body:   readFixture(t, "slack/block_actions.form"),
			want:   webhook.Event{Type: "block_actions", DeliveryID: slackTrigger},
		},
		{
			name:   "form content type in upper case",
			header: headerOf("Content-Type", "Application/X-WWW-Form-URLEncoded"),
			body:   readFixture(t, "slack/block_actions.form"),
			want:   webhook.Event{Type: "block_actions", DeliveryID: slackTrigger},
		},
		{
			name:   "form body sent as json",
			header: headerOf("Content-Type", "application/json"),
			body:   readFixture(t, "slack/block_actions.form"),
			want:   webhook.Event{},
		},
		{
			name:   "slack event id before trigger id",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":"event_callback","event_id":"Ev9","trigger_id":"1.2.3","event":{"type":"message"}}`),
			want:   webhook.Event{Type: "message", DeliveryID: "Ev9"},
		},
		{
			name:   "form without payload field",
			header: headerOf("Content-Type", "application/x-www-form-urlencoded"),
			body:   []byte(`token=abc&command=%2Fdeploy&text=now`),
			want:   webhook.Event{},
		},
		{
			name: "standard webhooks",
			header: headerOf(
				"Content-Type", "application/json",
				"Webhook-Id", standardID,
				"Webhook-Timestamp", "1614265330",
			),
			body: []byte(`{"type":"contact.created","timestamp":"2021-02-25T15:02:10Z","data":{"id":"c_1"}}`),
			want: webhook.Event{Type: "contact.created", DeliveryID: standardID},
		},
		{
			name: "svix id header",
			header: headerOf(
				"Content-Type", "application/json",
				"Svix-Id", standardID,
			),
			body: []byte(`{"type":"invoice.created","data":{}}`),
			want: webhook.Event{Type: "invoice.created", DeliveryID: standardID},
		},
		{
			name: "webhook-id header before body id",
			header: headerOf(
				"Content-Type", "application/json",
				"Webhook-Id", standardID,
			),
			body: readFixture(t, "stripe/invoice.paid.json"),
			want: webhook.Event{Type: "invoice.paid", DeliveryID: standardID},
		},
		{
			name: "github headers before shopify headers",
			header: headerOf(
				"X-GitHub-Event", "push",
				"X-GitHub-Delivery", githubDelivery,
				"X-Shopify-Topic", "orders/create",
				"X-Shopify-Webhook-Id", shopifyDelivery,
			),
			body: []byte(`{}`),
			want: webhook.Event{Type: "push", DeliveryID: githubDelivery},
		},
		{
			name:   "empty header value ignored",
			header: headerOf("X-GitHub-Event", "", "X-GitHub-Delivery", ""),
			body:   []byte(`{"type":"user.deleted","object":"event","id":"evt_9"}`),
			want:   webhook.Event{Type: "user.deleted", DeliveryID: "evt_9"},
		},
		{
			name:   "unknown json",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"a":1}`),
			want:   webhook.Event{},
		},
		{
			name:   "non-json body",
			header: headerOf("Content-Type", "text/plain"),
			body:   []byte("type=push id=1"),
			want:   webhook.Event{},
		},
		{
			name:   "json array body",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`[{"type":"push"}]`),
			want:   webhook.Event{},
		},
		{
			name:   "truncated json",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":"push","id":`),
			want:   webhook.Event{},
		},
		{
			name:   "empty body",
			header: http.Header{},
			body:   nil,
			want:   webhook.Event{},
		},
		{
			name:   "byte order mark before json",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte("\xef\xbb\xbf{\"type\":\"customer.updated\",\"object\":\"event\",\"id\":\"evt_bom\"}"),
			want:   webhook.Event{Type: "customer.updated", DeliveryID: "evt_bom"},
		},
		{
			name:   "white space before json",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte("\r\n\t {\"type\":\"customer.updated\"}"),
			want:   webhook.Event{Type: "customer.updated"},
		},
		{
			name:   "type is a number",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":42,"event_id":"Ev42"}`),
			want:   webhook.Event{DeliveryID: "Ev42"},
		},
		{
			name:   "type is an object",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":{"name":"push"},"object":"event","id":"evt_obj"}`),
			want:   webhook.Event{DeliveryID: "evt_obj"},
		},
		{
			name:   "event id is a number",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":"event_callback","event_id":7,"event":{"type":"message"}}`),
			want:   webhook.Event{Type: "message"},
		},
		{
			name:   "charset content type",
			header: headerOf("Content-Type", "application/json; charset=ISO-8859-1"),
			body:   []byte(`{"type":"order.paid"}`),
			want:   webhook.Event{Type: "order.paid"},
		},
		{
			name:   "vendor json content type",
			header: headerOf("Content-Type", "application/vnd.github+json"),
			body:   []byte(`{"type":"order.paid"}`),
			want:   webhook.Event{Type: "order.paid"},
		},
		{
			name:   "malformed content type",
			header: headerOf("Content-Type", "application/json; charset"),
			body:   []byte(`{"type":"order.paid"}`),
			want:   webhook.Event{Type: "order.paid"},
		},
		{
			name:   "delivery id of 200 bytes",
			header: headerOf("Webhook-Id", id200),
			body:   []byte(`{"type":"a.b"}`),
			want:   webhook.Event{Type: "a.b", DeliveryID: id200},
		},
		{
			name:   "delivery id over 200 bytes",
			header: headerOf("Webhook-Id", id201),
			body:   []byte(`{"type":"a.b"}`),
			want:   webhook.Event{Type: "a.b"},
		},
		{
			name:   "body delivery id over 200 bytes",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":"event_callback","event_id":"` + id201 + `"}`),
			want:   webhook.Event{Type: "event_callback"},
		},
		{
			name:   "delivery id with a control character",
			header: headerOf("X-GitHub-Delivery", "abc\x01def", "X-GitHub-Event", "push"),
			body:   []byte(`{}`),
			want:   webhook.Event{Type: "push"},
		},
		{
			name:   "delivery id with DEL",
			header: headerOf("Webhook-Id", "abc\x7fdef"),
			body:   []byte(`{}`),
			want:   webhook.Event{},
		},
		{
			name:   "body delivery id with a newline",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":"customer.updated","object":"event","id":"evt_1\nforged log line"}`),
			want:   webhook.Event{Type: "customer.updated"},
		},
		{
			name:   "delivery id with a C1 control character",
			header: headerOf("Content-Type", "application/json"),
			body:   []byte(`{"type":"event_callback","event_id":"Ev\u0085Line"}`),
			want:   webhook.Event{Type: "event_callback"},
		},
		{
			name:   "delivery id with invalid utf-8",
			header: headerOf("Svix-Id", "msg_\xff\xfe"),
			body:   []byte(`{}`),
			want:   webhook.Event{},
		},
		{
			name:   "delivery id with non-ascii letters",
			header: headerOf("Webhook-Id", "msg_é_中"),
			body:   []byte(`{}`),
			want:   webhook.Event{DeliveryID: "msg_é_中"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := webhook.Inspect(tt.header, tt.body)

			if got.Type != tt.want.Type {
				t.Errorf("Type = %q, want %q", got.Type, tt.want.Type)
			}
			if got.DeliveryID != tt.want.DeliveryID {
				t.Errorf("DeliveryID = %q, want %q", got.DeliveryID, tt.want.DeliveryID)
			}
		})
	}
}

func TestInspectDoesNotModifyInput(t *testing.T) {
	body := readFixture(t, "slack/block_actions.form")
	original := string(body)
	header := headerOf("Content-Type", "application/x-www-form-urlencoded")

	webhook.Inspect(header, body)

	if string(body) != original {
		t.Error("Inspect changed the body")
	}
	if len(header) != 1 || header.Get("Content-Type") != "application/x-www-form-urlencoded" {
		t.Errorf("Inspect changed the header: %v", header)
	}
}

func TestInspectForIgnoresOtherSendersHeaders(t *testing.T) {
	body := []byte(`{"id":"evt_real","object":"event","type":"invoice.paid"}`)
	header := http.Header{
		"Content-Type":      {"application/json"},
		"X-Github-Event":    {"charge.refunded"},
		"X-Github-Delivery": {"attacker-chosen-id"},
		"Svix-Id":           {"spoof"},
	}

	got := webhook.InspectFor("stripe", header, body)
	if got.Type != "invoice.paid" {
		t.Errorf("stripe type = %q, want invoice.paid from the signed body", got.Type)
	}
	if got.DeliveryID != "evt_real" {
		t.Errorf("stripe id = %q, want evt_real from the signed body", got.DeliveryID)
	}

	standard := http.Header{"Webhook-Id": {"msg_2"}, "X-Github-Delivery": {"spoof"}}
	if got := webhook.InspectFor("standard", standard, []byte(`{"type":"user.created"}`)); got.DeliveryID != "msg_2" {
		t.Errorf("standard id = %q, want msg_2 from webhook-id", got.DeliveryID)
	}

	github := http.Header{"X-Github-Event": {"push"}, "X-Github-Delivery": {"d-1"}}
	if got := webhook.InspectFor("github", github, []byte(`{}`)); got.Type != "push" || got.DeliveryID != "d-1" {
		t.Errorf("github = %+v, want type push and id d-1 from its own headers", got)
	}

	if got := webhook.InspectFor("none", header, body); got.DeliveryID != "attacker-chosen-id" {
		t.Errorf("none id = %q, want the X-GitHub-Delivery header (an unverified source reads every header)", got.DeliveryID)
	}
}
