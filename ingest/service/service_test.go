package service_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
)

// fixtureDir contains real provider request bodies and manifest.json, which
// lists the headers each delivery arrives with.
var fixtureDir = filepath.Join("..", "testdata", "webhooks")

// fixture is one entry of manifest.json.
type fixture struct {
	File        string            `json:"file"`
	Bytes       int               `json:"bytes"`
	ContentType string            `json:"content_type"`
	Headers     map[string]string `json:"headers"`
	body        []byte
}

// readFixture returns the manifest entry of file with its body, checking
// the body's size against the manifest.
func readFixture(t *testing.T, file string) fixture {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtureDir, "manifest.json"))
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	var entries []fixture
	if err := json.Unmarshal(data, &entries); err != nil {
		t.Fatalf("parse manifest: %v", err)
	}
	for _, entry := range entries {
		if entry.File != file {
			continue
		}
		entry.body, err = os.ReadFile(filepath.Join(fixtureDir, filepath.FromSlash(file)))
		if err != nil {
			t.Fatalf("read fixture: %v", err)
		}
		if len(entry.body) != entry.Bytes {
			t.Fatalf("%s has %d bytes, manifest has %d", file, len(entry.body), entry.Bytes)
		}
		return entry
	}
	t.Fatalf("manifest has no entry for %s", file)
	return fixture{}
}

func TestReceiveProviderFixtures(t *testing.T) {
	t.Parallel()
	url, names, ch := brokerNamespace(t)
	queue := declareTestRoute(t, ch, names)
	inst := startService(t, testConfig(url, names), nil)
	inst.waitReady(t)

	tests := []struct {
		file       string
		source     string
		wantID     string
		wantType   string
		wantRoute  string
		providerID string // header that carries the delivery id, if any
	}{
		{
			file:       "github/push.json",
			source:     "github",
			wantID:     "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			wantType:   "push",
			wantRoute:  "github.push",
			providerID: "X-GitHub-Delivery",
		},
		{
			file:      "stripe/invoice.paid.json",
			source:    "stripe",
			wantID:    "evt_1KJrGtJDPojXS6LN15fcthM3",
			wantType:  "invoice.paid",
			wantRoute: "stripe.invoice.paid",
		},
		{
			file:      "slack/event_callback.app_mention.json",
			source:    "slack",
			wantID:    "Ev111",
			wantType:  "app_mention",
			wantRoute: "slack.app_mention",
		},
		{
			file:       "shopify/orders.create.json",
			source:     "shopify",
			wantID:     "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
			wantType:   "orders/create",
			wantRoute:  "shopify.orders.create",
			providerID: "X-Shopify-Webhook-Id",
		},
	}
	for _, tt := range tests {
		t.Run(tt.source, func(t *testing.T) {
			fx := readFixture(t, tt.file)
			if tt.providerID != "" && fx.Headers[tt.providerID] != tt.wantID {
				t.Fatalf("manifest header %s = %q, want %q", tt.providerID, fx.Headers[tt.providerID], tt.wantID)
			}
			header := http.Header{}
			for name, value := range fx.Headers {
				header.Set(name, value)
			}
			header.Set("Authorization", "Bearer test-credential")
			header.Set("Proxy-Authorization", "Basic dGVzdDp0ZXN0")
			header.Set("Cookie", "session=test-session")

			before := time.Now().Truncate(time.Second)
			resp := inst.do(t, http.MethodPost, "/webhooks/"+tt.source, header, fx.body)
			after := time.Now()

			got := decodeAccepted(t, resp)
			if got.ID != tt.wantID {
				t.Errorf("response id = %q, want %q", got.ID, tt.wantID)
			}
			if got.RoutingKey != tt.wantRoute {
				t.Errorf("response routing_key = %q, want %q", got.RoutingKey, tt.wantRoute)
			}

			deliveries := rabbittest.Drain(t, ch, queue, 1, 10*time.Second)
			if len(deliveries) != 1 {
				t.Fatalf("got %d messages in %s, want 1", len(deliveries), queue)
			}
			d := deliveries[0]
			if !bytes.Equal(d.Body, fx.body) {
				t.Errorf("message body (%d bytes) differs from the request body (%d bytes)", len(d.Body), len(fx.body))
			}
			if d.MessageId != tt.wantID {
				t.Errorf("message id = %q, want %q", d.MessageId, tt.wantID)
			}
			if d.Type != tt.wantType {
				t.Errorf("type = %q, want %q", d.Type, tt.wantType)
			}
			if d.Exchange != names.Exchange() {
				t.Errorf("exchange = %q, want %q", d.Exchange, names.Exchange())
			}
			if d.RoutingKey != tt.wantRoute {
				t.Errorf("routing key = %q, want %q", d.RoutingKey, tt.wantRoute)
			}
			if d.ContentType != fx.ContentType {
				t.Errorf("content type = %q, want %q", d.ContentType, fx.ContentType)
			}
			if d.DeliveryMode != amqp.Persistent {
				t.Errorf("delivery mode = %d, want persistent (%d)", d.DeliveryMode, amqp.Persistent)
			}
			if d.AppId != contract.AppID {
				t.Errorf("app id = %q, want %q", d.AppId, contract.AppID)
			}
			checkContractHeaders(t, d, tt.source, before, after)
			checkHTTPHeaders(t, d, fx.Headers)

			msg, err := contract.Decode(&d)
			if err != nil {
				t.Fatalf("contract.Decode: %v", err)
			}
			if msg.Source != tt.source || msg.EventType != tt.wantType || msg.ID != tt.wantID {
				t.Errorf("decoded source, type, id = %q, %q, %q; want %q, %q, %q",
					msg.Source, msg.EventType, msg.ID, tt.source, tt.wantType, tt.wantID)
			}
			for name, value := range fx.Headers {
				if got := msg.Header.Get(name); got != value {
					t.Errorf("decoded header %s = %q, want %q", name, got, value)
				}
			}
		})
	}
}

// checkContractHeaders checks the hookbus headers of a message received
// between before and after.
func checkContractHeaders(t *testing.T, d amqp.Delivery, source string, before, after time.Time) {
	t.Helper()
	if got := d.Headers[contract.HeaderContract]; got != contract.Version {
		t.Errorf("header %s = %v, want %q", contract.HeaderContract, got, contract.Version)
	}
	if got := d.Headers[contract.HeaderSource]; got != source {
		t.Errorf("header %s = %v, want %q", contract.HeaderSource, got, source)
	}
	raw, _ := d.Headers[contract.HeaderReceivedAt].(string)
	receivedAt, err := time.Parse(time.RFC3339Nano, raw)
	if err != nil {
		t.Errorf("header %s = %q is not an RFC 3339 time: %v", contract.HeaderReceivedAt, raw, err)
	} else if receivedAt.Before(before) || receivedAt.After(after) {
		t.Errorf("header %s = %s, want between %s and %s", contract.HeaderReceivedAt, receivedAt, before, after)
	}
	if d.Timestamp.Before(before) || d.Timestamp.After(after) {
		t.Errorf("timestamp = %s, want between %s and %s", d.Timestamp, before, after)
	}
}

// checkHTTPHeaders checks that every sent header travels as an "http."
// header and that credentials do not.
func checkHTTPHeaders(t *testing.T, d amqp.Delivery, sent map[string]string) {
	t.Helper()
	for name, value := range sent {
		key := contract.HTTPHeaderPrefix + strings.ToLower(name)
		if got := d.Headers[key]; got != value {
			t.Errorf("header %s = %v, want %q", key, got, value)
		}
	}
	for _, name := range []string{"authorization", "proxy-authorization", "cookie"} {
		if got, ok := d.Headers[contract.HTTPHeaderPrefix+name]; ok {
			t.Errorf("credential header %s%s travels in the message: %v", contract.HTTPHeaderPrefix, name, got)
		}
	}
}

func TestReceiveWithoutRouteGoesToUnrouted(t *testing.T) {
	t.Parallel()
	url, names, ch := brokerNamespace(t)
	inst := startService(t, testConfig(url, names), nil)
	inst.waitReady(t)

	resp := inst.postJSON(t, "acme", []byte(`{"type":"widget.created","id":"w_1"}`), "Webhook-Id", "msg_unrouted_1")

	got := decodeAccepted(t, resp)
	if got.RoutingKey != "acme.widget.created" {
		t.Errorf("response routing_key = %q, want %q", got.RoutingKey, "acme.widget.created")
	}
	deliveries := rabbittest.Drain(t, ch, names.UnroutedQueue(), 1, 10*time.Second)
	if len(deliveries) != 1 {
		t.Fatalf("got %d messages in %s, want 1", len(deliveries), names.UnroutedQueue())
	}
	if deliveries[0].MessageId != "msg_unrouted_1" {
		t.Errorf("message id = %q, want %q", deliveries[0].MessageId, "msg_unrouted_1")
	}
	if deliveries[0].RoutingKey != "acme.widget.created" {
		t.Errorf("routing key = %q, want %q", deliveries[0].RoutingKey, "acme.widget.created")
	}
}

func TestReceiveGeneratesMissingID(t *testing.T) {
	t.Parallel()
	url, names, ch := brokerNamespace(t)
	queue := declareTestRoute(t, ch, names)
	inst := startService(t, testConfig(url, names), nil)
	inst.waitReady(t)

	first := decodeAccepted(t, inst.postJSON(t, "acme", []byte(`{"a":1}`)))
	second := decodeAccepted(t, inst.postJSON(t, "acme", []byte(`{"a":1}`)))

	if first.ID == "" || first.ID == second.ID {
		t.Errorf("generated ids %q and %q, want two distinct non-empty ids", first.ID, second.ID)
	}
	if first.RoutingKey != "acme.unknown" {
		t.Errorf("routing_key = %q, want %q", first.RoutingKey, "acme.unknown")
	}
	deliveries := rabbittest.Drain(t, ch, queue, 2, 10*time.Second)
	if len(deliveries) != 2 {
		t.Fatalf("got %d messages, want 2", len(deliveries))
	}
	for i, want := range []string{first.ID, second.ID} {
		if deliveries[i].MessageId != want {
			t.Errorf("message %d id = %q, want %q", i, deliveries[i].MessageId, want)
		}
		if deliveries[i].Type != contract.UnknownEventType {
			t.Errorf("message %d type = %q, want %q", i, deliveries[i].Type, contract.UnknownEventType)
		}
	}
}

func TestReadyzWhenConnected(t *testing.T) {
	t.Parallel()
	url, names, _ := brokerNamespace(t)
	inst := startService(t, testConfig(url, names), nil)

	inst.waitReady(t)

	if !inst.svc.Ready() {
		t.Error("Ready() = false after /readyz responded 200")
	}
	resp := inst.do(t, http.MethodGet, "/readyz", nil, nil)
	var status map[string]any
	if err := json.Unmarshal(resp.body, &status); err != nil {
		t.Fatalf("/readyz body %q is not JSON: %v", resp.body, err)
	}
	for key, want := range map[string]any{
		"status":           "ready",
		"broker_connected": true,
		"broker_blocked":   false,
		"publish_channel":  true,
	} {
		if status[key] != want {
			t.Errorf("/readyz %s = %v, want %v", key, status[key], want)
		}
	}
	if resp := inst.do(t, http.MethodGet, "/healthz", nil, nil); resp.status != http.StatusOK {
		t.Errorf("/healthz status = %d, want 200", resp.status)
	}
}

func TestMetricsCountRequests(t *testing.T) {
	t.Parallel()
	url, names, _ := brokerNamespace(t)
	inst := startService(t, testConfig(url, names), nil)
	inst.waitReady(t)

	decodeAccepted(t, inst.postJSON(t, "acme", []byte(`{"type":"a"}`)))
	checkErrorBody(t, inst.postJSON(t, "Acme", []byte(`{"type":"a"}`)), http.StatusNotFound)
	resp := inst.do(t, http.MethodGet, "/metrics", nil, nil)

	if resp.status != http.StatusOK {
		t.Fatalf("/metrics status = %d, want 200", resp.status)
	}
	for _, want := range []string{
		`hookbus_ingest_requests_total{code="202"} 1`,
		`hookbus_ingest_requests_total{code="404"} 1`,
		`hookbus_ingest_publish_seconds_count{result="confirmed"} 1`,
	} {
		if !strings.Contains(string(resp.body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
