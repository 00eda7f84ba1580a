package contract_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// receivedAt has nanoseconds that the AMQP timestamp property (whole
// seconds) cannot carry, so only the received-at header can preserve them.
var receivedAt = time.Date(2025, time.March, 14, 9, 26, 53, 589793238, time.UTC)

// fixture is one webhook body from testdata with the headers its provider
// sends along.
type fixture struct {
	name      string
	file      string
	source    string
	eventType string
	id        string
	header    map[string]string
}

var fixtures = []fixture{
	{
		name:      "github push",
		file:      "github/push.json",
		source:    "github",
		eventType: "push",
		id:        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		header: map[string]string{
			"Content-Type":                           "application/json",
			"User-Agent":                             "GitHub-Hookshot/044aadd",
			"X-GitHub-Event":                         "push",
			"X-GitHub-Delivery":                      "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			"X-GitHub-Hook-ID":                       "292430182",
			"X-GitHub-Hook-Installation-Target-ID":   "186853002",
			"X-GitHub-Hook-Installation-Target-Type": "repository",
			"X-Hub-Signature":                        "sha1=0a791e626db6b3ef80c62e52be352dd466b80a8a",
			"X-Hub-Signature-256":                    "sha256=76498c579ca54830c65b27cc5e2dee482dcbf5bd5fc203f12bb8b6960738d5e3",
		},
	},
	{
		name:      "stripe invoice paid",
		file:      "stripe/invoice.paid.json",
		source:    "stripe",
		eventType: "invoice.paid",
		id:        "evt_1KJrGtJDPojXS6LN15fcthM3",
		header: map[string]string{
			"Content-Type":     "application/json; charset=utf-8",
			"User-Agent":       "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
			"Accept":           "*/*; q=0.5, application/xml",
			"Cache-Control":    "no-cache",
			"Stripe-Signature": "t=1700000000,v1=921bb4f5d01f76d8b95b615b8cef98f8cef72797637e06b610ea235bcef24455",
		},
	},
	{
		name:      "slack app mention",
		file:      "slack/event_callback.app_mention.json",
		source:    "slack",
		eventType: "app_mention",
		id:        "Ev111",
		header: map[string]string{
			"Content-Type":              "application/json",
			"User-Agent":                "Slackbot 1.0 (+https://api.slack.com/robots)",
			"X-Slack-Request-Timestamp": "1700000000",
			"X-Slack-Signature":         "v0=c2254a36905b59c82420cb6eab4de4ab6650be12161c2a7d53020cd2af02d0af",
		},
	},
	{
		name:      "slack block actions form",
		file:      "slack/block_actions.form",
		source:    "slack-interactivity",
		eventType: "block_actions",
		id:        "0195d0a2-6b1e-7c3a-9f4e-2a8b5c7d9e01",
		header: map[string]string{
			"Content-Type":              "application/x-www-form-urlencoded",
			"User-Agent":                "Slackbot 1.0 (+https://api.slack.com/robots)",
			"X-Slack-Request-Timestamp": "1700000000",
			"X-Slack-Signature":         "v0=f6891886173d3a87bc1ecde536233549fc6782fb15e368d7afda46195c89ebad",
		},
	},
	{
		name:      "shopify orders create",
		file:      "shopify/orders.create.json",
		source:    "shopify",
		eventType: "orders/create",
		id:        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
		header: map[string]string{
			"Content-Type":           "application/json",
			"X-Shopify-Topic":        "orders/create",
			"X-Shopify-Hmac-Sha256":  "Z0PmktpjcCZvNFeKV3DIwsJf/QQRikvs1VTpeH65RmQ=",
			"X-Shopify-Shop-Domain":  "example-shop.myshopify.com",
			"X-Shopify-API-Version":  "2024-10",
			"X-Shopify-Webhook-Id":   "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
			"X-Shopify-Event-Id":     "98880550-7158-44d4-b7cd-2c97c8a091b5",
			"X-Shopify-Triggered-At": "2023-11-14T22:13:20.000000000Z",
		},
	},
}

// message builds the contract message that ingest would build for fx. Like
// net/http, it canonicalizes header names, and it adds headers with several
// values, as a chain of proxies sends them.
func (fx fixture) message(t *testing.T) *contract.Message {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("testdata", fx.file))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	header := http.Header{}
	for name, value := range fx.header {
		header.Set(name, value)
	}
	header.Add("X-Forwarded-For", "203.0.113.7")
	header.Add("X-Forwarded-For", "198.51.100.23")
	header.Add("Via", "1.1 edge-proxy")
	header.Add("Via", "1.1 internal-lb")
	return &contract.Message{
		ID:          fx.id,
		Source:      fx.source,
		EventType:   fx.eventType,
		ContentType: header.Get("Content-Type"),
		ReceivedAt:  receivedAt,
		Header:      header,
		Meta:        map[string]string{"verified-by": fx.source + "-signature"},
		Body:        body,
	}
}

// delivery returns the delivery a consumer would get for p, without a broker.
func delivery(p amqp.Publishing, exchange, key string) *amqp.Delivery {
	return &amqp.Delivery{
		Headers:         p.Headers,
		ContentType:     p.ContentType,
		ContentEncoding: p.ContentEncoding,
		DeliveryMode:    p.DeliveryMode,
		Priority:        p.Priority,
		CorrelationId:   p.CorrelationId,
		ReplyTo:         p.ReplyTo,
		Expiration:      p.Expiration,
		MessageId:       p.MessageId,
		Timestamp:       p.Timestamp,
		Type:            p.Type,
		UserId:          p.UserId,
		AppId:           p.AppId,
		Exchange:        exchange,
		RoutingKey:      key,
		Body:            p.Body,
	}
}

// assertSameMessage reports every field in which got differs from want.
func assertSameMessage(t *testing.T, want, got *contract.Message) {
	t.Helper()
	if got.ID != want.ID {
		t.Errorf("ID = %q, want %q", got.ID, want.ID)
	}
	if got.Source != want.Source {
		t.Errorf("Source = %q, want %q", got.Source, want.Source)
	}
	if got.EventType != want.EventType {
		t.Errorf("EventType = %q, want %q", got.EventType, want.EventType)
	}
	if got.ContentType != want.ContentType {
		t.Errorf("ContentType = %q, want %q", got.ContentType, want.ContentType)
	}
	if got.ContentEncoding != want.ContentEncoding {
		t.Errorf("ContentEncoding = %q, want %q", got.ContentEncoding, want.ContentEncoding)
	}
	if !got.ReceivedAt.Equal(want.ReceivedAt) {
		t.Errorf("ReceivedAt = %s, want %s", got.ReceivedAt.Format(time.RFC3339Nano), want.ReceivedAt.Format(time.RFC3339Nano))
	}
	for name, values := range want.Header {
		if !slices.Equal(got.Header[name], values) {
			t.Errorf("Header[%q] = %q, want %q", name, got.Header[name], values)
		}
	}
	for name := range got.Header {
		if _, ok := want.Header[name]; !ok {
			t.Errorf("Header has unexpected %q = %q", name, got.Header[name])
		}
	}
	if !maps.Equal(got.Meta, want.Meta) {
		t.Errorf("Meta = %v, want %v", got.Meta, want.Meta)
	}
	if !bytes.Equal(got.Body, want.Body) {
		t.Errorf("Body differs: got %d bytes, want %d bytes", len(got.Body), len(want.Body))
	}
}

func TestEncodeDecodeFixtures(t *testing.T) {
	for _, fx := range fixtures {
		t.Run(fx.name, func(t *testing.T) {
			want := fx.message(t)

			p, err := want.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}
			if p.DeliveryMode != amqp.Persistent {
				t.Errorf("DeliveryMode = %d, want persistent (%d)", p.DeliveryMode, amqp.Persistent)
			}
			if p.AppId != contract.AppID {
				t.Errorf("AppId = %q, want %q", p.AppId, contract.AppID)
			}
			if p.Headers[contract.HeaderContract] != contract.Version {
				t.Errorf("header %s = %v, want %q", contract.HeaderContract, p.Headers[contract.HeaderContract], contract.Version)
			}
			if !p.Timestamp.Equal(receivedAt) {
				t.Errorf("Timestamp = %s, want %s", p.Timestamp, receivedAt)
			}

			got, err := contract.Decode(delivery(p, "webhooks.events", want.RoutingKey()))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			assertSameMessage(t, want, got)
		})
	}
}

// TestRoundTripThroughBroker sends every fixture through a real RabbitMQ,
// which re-encodes the headers table, and checks that nothing changed.
func TestRoundTripThroughBroker(t *testing.T) {
	url := rabbittest.URL(t)
	const route = "contract"
	names := rabbittest.Namespace(t, url, route)
	ch := rabbittest.Channel(t, url)
	if err := topology.Declare(ch, names); err != nil {
		t.Fatalf("declare topology: %v", err)
	}
	if err := topology.DeclareRoute(ch, names, topology.Route{Name: route, Bindings: []string{"#"}}); err != nil {
		t.Fatalf("declare route: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("enable confirms: %v", err)
	}

	// A message whose properties and header names have the maximum
	// length of an AMQP short string must pass the broker too.
	longest := &contract.Message{
		ID:              strings.Repeat("i", 255),
		Source:          strings.Repeat("s", contract.MaxSourceLength),
		EventType:       "limits",
		ContentType:     "application/json; profile=" + strings.Repeat("p", 255-len("application/json; profile=")),
		ContentEncoding: strings.Repeat("e", 255),
		ReceivedAt:      receivedAt,
		Header:          http.Header{},
		Body:            []byte(`{"limits":true}`),
	}
	longest.Header.Set("X-"+strings.Repeat("n", 255-len(contract.HTTPHeaderPrefix)-2), "value")
	cases := []struct {
		name string
		msg  *contract.Message
	}{{"longest short strings", longest}}
	for _, fx := range fixtures {
		cases = append(cases, struct {
			name string
			msg  *contract.Message
		}{fx.name, fx.message(t)})
	}

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			want := tc.msg
			p, err := want.Encode()
			if err != nil {
				t.Fatalf("Encode: %v", err)
			}

			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, names.Exchange(), want.RoutingKey(), true, false, p)
			if err != nil {
				t.Fatalf("publish: %v", err)
			}
			acked, err := confirm.WaitContext(ctx)
			if err != nil {
				t.Fatalf("wait for confirm: %v", err)
			}
			if !acked {
				t.Fatal("broker nacked the message")
			}

			got := rabbittest.Drain(t, ch, names.RouteQueue(route), 1, 10*time.Second)
			if len(got) != 1 {
				t.Fatalf("got %d messages from the route queue, want 1", len(got))
			}
			if got[0].RoutingKey != want.RoutingKey() {
				t.Errorf("routing key = %q, want %q", got[0].RoutingKey, want.RoutingKey())
			}
			decoded, err := contract.Decode(&got[0])
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			assertSameMessage(t, want, decoded)
		})
	}
}

// validDelivery returns the delivery of a small valid message for tests to
// break one part of.
func validDelivery(t *testing.T) *amqp.Delivery {
	t.Helper()
	m := &contract.Message{
		ID:         "delivery-1",
		Source:     "github",
		EventType:  "push",
		ReceivedAt: receivedAt,
		Header:     http.Header{"X-Github-Event": {"push"}},
		Body:       []byte(`{}`),
	}
	p, err := m.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	return delivery(p, "webhooks.events", m.RoutingKey())
}

func TestDecodeRejectsContractViolations(t *testing.T) {
	tests := []struct {
		name    string
		corrupt func(d *amqp.Delivery)
	}{
		{"missing contract header", func(d *amqp.Delivery) { delete(d.Headers, contract.HeaderContract) }},
		{"other contract version", func(d *amqp.Delivery) { d.Headers[contract.HeaderContract] = "2" }},
		{"contract version not a string", func(d *amqp.Delivery) { d.Headers[contract.HeaderContract] = int32(1) }},
		{"no headers at all", func(d *amqp.Delivery) { d.Headers = nil }},
		{"missing message id", func(d *amqp.Delivery) { d.MessageId = "" }},
		{"missing source", func(d *amqp.Delivery) { delete(d.Headers, contract.HeaderSource) }},
		{"empty source", func(d *amqp.Delivery) { d.Headers[contract.HeaderSource] = "" }},
		{"source with dot", func(d *amqp.Delivery) { d.Headers[contract.HeaderSource] = "git.hub" }},
		{"source with upper case", func(d *amqp.Delivery) { d.Headers[contract.HeaderSource] = "GitHub" }},
		{"source too long", func(d *amqp.Delivery) {
			d.Headers[contract.HeaderSource] = strings.Repeat("a", contract.MaxSourceLength+1)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			d := validDelivery(t)
			tc.corrupt(d)

			msg, err := contract.Decode(d)
			if !errors.Is(err, contract.ErrContract) {
				t.Fatalf("Decode error = %v, want one wrapping ErrContract", err)
			}
			if msg != nil {
				t.Errorf("Decode returned a message %+v along with the error", msg)
			}
		})
	}
}

func TestDecodeDefaults(t *testing.T) {
	t.Run("empty type is unknown", func(t *testing.T) {
		d := validDelivery(t)
		d.Type = ""
		msg, err := contract.Decode(d)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if msg.EventType != contract.UnknownEventType {
			t.Errorf("EventType = %q, want %q", msg.EventType, contract.UnknownEventType)
		}
	})

	t.Run("received-at falls back to timestamp", func(t *testing.T) {
		d := validDelivery(t)
		delete(d.Headers, contract.HeaderReceivedAt)
		d.Timestamp = receivedAt.Truncate(time.Second)
		msg, err := contract.Decode(d)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if !msg.ReceivedAt.Equal(d.Timestamp) {
			t.Errorf("ReceivedAt = %s, want the timestamp property %s", msg.ReceivedAt, d.Timestamp)
		}
	})

	t.Run("unparsable received-at falls back to timestamp", func(t *testing.T) {
		d := validDelivery(t)
		d.Headers[contract.HeaderReceivedAt] = "yesterday"
		d.Timestamp = receivedAt.Truncate(time.Second)
		msg, err := contract.Decode(d)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if !msg.ReceivedAt.Equal(d.Timestamp) {
			t.Errorf("ReceivedAt = %s, want the timestamp property %s", msg.ReceivedAt, d.Timestamp)
		}
	})

	t.Run("byte slice header values", func(t *testing.T) {
		d := validDelivery(t)
		d.Headers[contract.HTTPHeaderPrefix+"x-request-id"] = []byte("req-7")
		d.Headers[contract.MetaPrefix+"verified-by"] = []byte("github-signature")
		msg, err := contract.Decode(d)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if got := msg.Header.Values("X-Request-Id"); !slices.Equal(got, []string{"req-7"}) {
			t.Errorf("Header X-Request-Id = %q, want [req-7]", got)
		}
		if got := msg.Meta["verified-by"]; got != "github-signature" {
			t.Errorf("Meta[verified-by] = %q, want github-signature", got)
		}
	})

	t.Run("unrelated headers ignored", func(t *testing.T) {
		d := validDelivery(t)
		d.Headers["x-death"] = []any{amqp.Table{"count": int64(1)}}
		msg, err := contract.Decode(d)
		if err != nil {
			t.Fatalf("Decode: %v", err)
		}
		if _, ok := msg.Meta["x-death"]; ok {
			t.Error("Meta contains x-death, which is not a hookbus header")
		}
		if len(msg.Header) != 1 {
			t.Errorf("Header = %v, want only X-Github-Event", msg.Header)
		}
	})
}

func TestEncodeRejectsInvalidMessage(t *testing.T) {
	tests := []struct {
		name   string
		change func(m *contract.Message)
	}{
		{"empty id", func(m *contract.Message) { m.ID = "" }},
		{"empty source", func(m *contract.Message) { m.Source = "" }},
		{"source with slash", func(m *contract.Message) { m.Source = "git/hub" }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &contract.Message{ID: "id-1", Source: "github", EventType: "push", Body: []byte("{}")}
			tc.change(m)
			if _, err := m.Encode(); !errors.Is(err, contract.ErrContract) {
				t.Errorf("Encode error = %v, want one wrapping ErrContract", err)
			}
		})
	}
}

func TestEncodeHeadersTooLarge(t *testing.T) {
	tests := []struct {
		name   string
		change func(m *contract.Message)
	}{
		{"one value over the limit", func(m *contract.Message) {
			m.Header.Set("X-Large", strings.Repeat("v", contract.MaxHeaderBytes))
		}},
		{"many headers over the limit", func(m *contract.Message) {
			for i := range 100 {
				m.Header.Set(fmt.Sprintf("X-Part-%d", i), strings.Repeat("v", contract.MaxHeaderBytes/90))
			}
		}},
		{"meta over the limit", func(m *contract.Message) {
			m.Meta = map[string]string{"note": strings.Repeat("v", contract.MaxHeaderBytes)}
		}},
		// Each empty value still takes five bytes on the wire, so the
		// table exceeds RabbitMQ's default frame_max of 128 KiB.
		{"many empty values", func(m *contract.Message) {
			m.Header["X-Empty"] = make([]string, 30_000)
		}},
		{"header name over 255 bytes", func(m *contract.Message) {
			m.Header.Set("X-"+strings.Repeat("n", 300), "v")
		}},
		{"meta name over 255 bytes", func(m *contract.Message) {
			m.Meta = map[string]string{strings.Repeat("n", 300): "v"}
		}},
		{"id over 255 bytes", func(m *contract.Message) { m.ID = strings.Repeat("i", 256) }},
		{"content type over 255 bytes", func(m *contract.Message) {
			m.ContentType = "application/json; x=" + strings.Repeat("v", 300)
		}},
		{"content encoding over 255 bytes", func(m *contract.Message) {
			m.ContentEncoding = strings.Repeat("gzip, ", 50)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := &contract.Message{ID: "id-1", Source: "github", EventType: "push", Header: http.Header{}, Body: []byte("{}")}
			tc.change(m)
			if _, err := m.Encode(); !errors.Is(err, contract.ErrHeadersTooLarge) {
				t.Errorf("Encode error = %v, want one wrapping ErrHeadersTooLarge", err)
			}
		})
	}
}

func TestEncodeHeadersBelowLimit(t *testing.T) {
	m := &contract.Message{ID: "id-1", Source: "github", EventType: "push", Header: http.Header{}, Body: []byte("{}")}
	m.Header.Set("X-Large", strings.Repeat("v", contract.MaxHeaderBytes/2))
	m.Header["X-Empty"] = make([]string, 1000)

	p, err := m.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if got, want := p.Headers["http.x-large"], m.Header.Get("X-Large"); got != want {
		t.Errorf("header http.x-large differs from the X-Large value of %d bytes", len(want))
	}
}

func TestEncodeTruncatesLongEventType(t *testing.T) {
	m := &contract.Message{ID: "id-1", Source: "github", EventType: strings.Repeat("t", 1000), Body: []byte("{}")}
	p, err := m.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	if len(p.Type) != 255 {
		t.Errorf("type property has %d bytes, want 255", len(p.Type))
	}
}

func TestFilterHeader(t *testing.T) {
	in := http.Header{
		"Connection":          {"keep-alive, X-Hop-Secret", "x-other-hop"},
		"Keep-Alive":          {"timeout=5"},
		"Proxy-Connection":    {"keep-alive"},
		"Proxy-Authenticate":  {"Basic"},
		"Proxy-Authorization": {"Basic cHJveHk6c2VjcmV0"},
		"Te":                  {"trailers"},
		"Trailer":             {"Expires"},
		"Transfer-Encoding":   {"chunked"},
		"Upgrade":             {"websocket"},
		"Authorization":       {"Bearer secret-token"},
		"Cookie":              {"session=secret"},
		"X-Hop-Secret":        {"only for the next hop"},
		"X-Other-Hop":         {"also for the next hop"},

		"Content-Type":    {"application/json"},
		"User-Agent":      {"GitHub-Hookshot/044aadd"},
		"X-Github-Event":  {"push"},
		"X-Forwarded-For": {"203.0.113.7", "198.51.100.23"},
		"Via":             {"1.1 edge-proxy"},
		"Set-Cookie":      {"not a request header"},
		// A name that did not pass through net/http's canonicalization.
		"x-shopify-topic": {"orders/create"},
	}
	dropped := []string{
		"Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate",
		"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
		"Authorization", "Cookie", "X-Hop-Secret", "X-Other-Hop",
	}
	kept := map[string][]string{
		"Content-Type":    {"application/json"},
		"User-Agent":      {"GitHub-Hookshot/044aadd"},
		"X-Github-Event":  {"push"},
		"X-Forwarded-For": {"203.0.113.7", "198.51.100.23"},
		"Via":             {"1.1 edge-proxy"},
		"Set-Cookie":      {"not a request header"},
		"X-Shopify-Topic": {"orders/create"},
	}

	out := contract.FilterHeader(in)

	for _, name := range dropped {
		if values, ok := out[name]; ok {
			t.Errorf("FilterHeader kept %s = %q", name, values)
		}
	}
	for name, want := range kept {
		if got := out[name]; !slices.Equal(got, want) {
			t.Errorf("FilterHeader()[%q] = %q, want %q", name, got, want)
		}
	}
	if len(out) != len(kept) {
		t.Errorf("FilterHeader returned %d headers, want %d: %v", len(out), len(kept), out)
	}

	out["X-Forwarded-For"][0] = "changed"
	if in["X-Forwarded-For"][0] != "203.0.113.7" {
		t.Error("changing the result changed the input: FilterHeader must copy the values")
	}
}

func TestFilterHeaderEmpty(t *testing.T) {
	if out := contract.FilterHeader(nil); len(out) != 0 {
		t.Errorf("FilterHeader(nil) = %v, want empty", out)
	}
}

func TestDecodeKeepsIntegerMetaHeaders(t *testing.T) {
	m := contract.Message{ID: "id-1", Source: "github", EventType: "push", ReceivedAt: time.Now(), Body: []byte("{}")}
	pub, err := m.Encode()
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	pub.Headers["hookbus-attempts"] = int32(3)
	pub.Headers["hookbus-replays"] = int64(1)
	d := amqp.Delivery{Headers: pub.Headers, MessageId: pub.MessageId, Type: pub.Type, Body: pub.Body}

	got, err := contract.Decode(&d)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got.Meta["attempts"] != "3" {
		t.Errorf(`Meta["attempts"] = %q, want "3"`, got.Meta["attempts"])
	}
	if got.Meta["replays"] != "1" {
		t.Errorf(`Meta["replays"] = %q, want "1"`, got.Meta["replays"])
	}
}
