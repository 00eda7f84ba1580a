package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	ingestservice "github.com/hookbus/hookbus/ingest/service"
	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/topology"
	"github.com/hookbus/hookbus/processor/handlers"
	processorservice "github.com/hookbus/hookbus/processor/service"
)

// Bounds of the waits in these tests. They limit how long a broken pipeline
// can stall a test. They are not speed targets: a healthy pipeline takes
// milliseconds.
const (
	startTimeout   = 30 * time.Second // until a service reports ready
	arrivalTimeout = 30 * time.Second // until a posted webhook reaches a handler or a queue
	stopTimeout    = 30 * time.Second // until Run returns or a process exits
	pollInterval   = 20 * time.Millisecond
)

// routeName is the name of the route that the tests' processors consume. It
// is the name of the processor's built-in route, so that the route queue is
// names.RouteQueue("default") in every test.
const routeName = handlers.DefaultRouteName

// markerSource is the source of the marker webhooks that the tests post
// after the webhooks under test.
const markerSource = "marker"

// webhookFixture is a provider's sample delivery: a body file in ../testdata
// and the headers that the provider sends with it.
type webhookFixture struct {
	name      string      // subtest name
	file      string      // body file, relative to ../testdata
	source    string      // the <source> of POST /webhooks/<source>
	header    http.Header // request headers, Content-Type included
	id        string      // message id that ingest derives from the headers or the body
	eventType string      // event type that ingest derives
}

// providerFixtures returns one sample delivery of each supported provider,
// with the headers listed in ../testdata/README.md.
func providerFixtures() []webhookFixture {
	return []webhookFixture{githubPush(), stripeInvoicePaid(), slackAppMention(), shopifyOrderCreated()}
}

func githubPush() webhookFixture {
	return webhookFixture{
		name:   "github push",
		file:   "github/push.json",
		source: "github",
		header: newHeader(
			"Content-Type", "application/json",
			"User-Agent", "GitHub-Hookshot/044aadd",
			"X-GitHub-Event", "push",
			"X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958",
			"X-GitHub-Hook-ID", "292430182",
			"X-GitHub-Hook-Installation-Target-ID", "186853002",
			"X-GitHub-Hook-Installation-Target-Type", "repository",
			"X-Hub-Signature", "sha1=0a791e626db6b3ef80c62e52be352dd466b80a8a",
			"X-Hub-Signature-256", "sha256=76498c579ca54830c65b27cc5e2dee482dcbf5bd5fc203f12bb8b6960738d5e3",
		),
		id:        "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		eventType: "push",
	}
}

func stripeInvoicePaid() webhookFixture {
	return webhookFixture{
		name:   "stripe invoice.paid",
		file:   "stripe/invoice.paid.json",
		source: "stripe",
		header: newHeader(
			"Content-Type", "application/json; charset=utf-8",
			"User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
			"Accept", "*/*; q=0.5, application/xml",
			"Cache-Control", "no-cache",
			"Stripe-Signature", "t=1700000000,v1=921bb4f5d01f76d8b95b615b8cef98f8cef72797637e06b610ea235bcef24455",
		),
		id:        "evt_1KJrGtJDPojXS6LN15fcthM3",
		eventType: "invoice.paid",
	}
}

func slackAppMention() webhookFixture {
	return webhookFixture{
		name:   "slack app_mention",
		file:   "slack/event_callback.app_mention.json",
		source: "slack",
		header: newHeader(
			"Content-Type", "application/json",
			"User-Agent", "Slackbot 1.0 (+https://api.slack.com/robots)",
			"X-Slack-Request-Timestamp", "1700000000",
			"X-Slack-Signature", "v0=c2254a36905b59c82420cb6eab4de4ab6650be12161c2a7d53020cd2af02d0af",
		),
		id:        "Ev111",
		eventType: "app_mention",
	}
}

func shopifyOrderCreated() webhookFixture {
	return webhookFixture{
		name:   "shopify orders/create",
		file:   "shopify/orders.create.json",
		source: "shopify",
		header: newHeader(
			"Content-Type", "application/json",
			"X-Shopify-Topic", "orders/create",
			"X-Shopify-Hmac-Sha256", "Z0PmktpjcCZvNFeKV3DIwsJf/QQRikvs1VTpeH65RmQ=",
			"X-Shopify-Shop-Domain", "example-shop.myshopify.com",
			"X-Shopify-API-Version", "2024-10",
			"X-Shopify-Webhook-Id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
			"X-Shopify-Event-Id", "98880550-7158-44d4-b7cd-2c97c8a091b5",
			"X-Shopify-Triggered-At", "2023-11-14T22:13:20.000000000Z",
		),
		id:        "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
		eventType: "orders/create",
	}
}

// newHeader returns a header built from name, value pairs.
func newHeader(pairs ...string) http.Header {
	header := http.Header{}
	for i := 0; i+1 < len(pairs); i += 2 {
		header.Add(pairs[i], pairs[i+1])
	}
	return header
}

// readFixture returns the bytes of a file in ../testdata.
func readFixture(t *testing.T, file string) []byte {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("..", "testdata", filepath.FromSlash(file)))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return body
}

// testLogger returns a text logger at info level that writes to the test's
// output with a service attribute.
func testLogger(t *testing.T, service string) *slog.Logger {
	handler := slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo})
	return slog.New(handler).With("service", service)
}

// waitUntil polls cond until it returns true and fails the test when that
// takes longer than timeout.
func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		<-ticker.C
	}
}

// waitReady polls ready until it returns true. It fails the test when the
// service's Run returns first (done receives its result) or when timeout
// passes. A result taken from done is put back for the cleanup that waits
// for it.
func waitReady(t *testing.T, service string, ready func() bool, done chan error) {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	ticker := time.NewTicker(pollInterval)
	defer ticker.Stop()
	for !ready() {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("%s stopped before it was ready: %v", service, err)
		case <-ticker.C:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not ready after %s", service, startTimeout)
		}
	}
}

// waitRun waits for the result of a service's Run and reports an error
// result or a Run that does not return within stopTimeout.
func waitRun(t *testing.T, service string, done <-chan error) {
	t.Helper()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("%s Run returned an error: %v", service, err)
		}
	case <-time.After(stopTimeout):
		t.Errorf("%s Run did not return within %s of cancellation", service, stopTimeout)
	}
}

// runningIngest is an ingest service running in the test process.
type runningIngest struct {
	svc     *ingestservice.Service
	baseURL string // http://127.0.0.1:<port>
}

// startIngest runs ingest with its default configuration on a free loopback
// port, publishing into the namespace of names, and waits until it is
// ready. A cleanup stops it.
func startIngest(t *testing.T, amqpURL string, names topology.Names) *runningIngest {
	t.Helper()
	var cfg ingestservice.Config
	if err := config.Load(&cfg); err != nil {
		t.Fatalf("load ingest configuration: %v", err)
	}
	cfg.AMQPURL = amqpURL
	cfg.Namespace = names.Namespace()
	cfg.Addr = "127.0.0.1:0"

	svc, err := ingestservice.New(cfg, testLogger(t, "ingest"))
	if err != nil {
		t.Fatalf("create ingest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- svc.Run(ctx)
	}()
	t.Cleanup(func() {
		cancel()
		waitRun(t, "ingest", done)
	})

	waitReady(t, "ingest", svc.Ready, done)
	return &runningIngest{svc: svc, baseURL: "http://" + svc.Addr()}
}

// runningProcessor is a processor service running in the test process.
type runningProcessor struct {
	svc      *processorservice.Service
	cancel   context.CancelFunc
	done     chan error
	stopOnce sync.Once
}

// startProcessor runs a processor of routes with its default configuration
// on a free loopback port, consuming from the namespace of names, and waits
// until it consumes every route. A cleanup stops it unless stop did.
func startProcessor(t *testing.T, amqpURL string, names topology.Names, routes ...consume.Route) *runningProcessor {
	t.Helper()
	var cfg processorservice.Config
	if err := config.Load(&cfg); err != nil {
		t.Fatalf("load processor configuration: %v", err)
	}
	cfg.AMQPURL = amqpURL
	cfg.Namespace = names.Namespace()
	cfg.Addr = "127.0.0.1:0"

	svc, err := processorservice.New(cfg, routes, testLogger(t, "processor"))
	if err != nil {
		t.Fatalf("create processor: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &runningProcessor{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() {
		p.done <- svc.Run(ctx)
	}()
	t.Cleanup(func() { p.stop(t) })

	waitReady(t, "processor", svc.Ready, p.done)
	return p
}

// stop cancels the processor and waits for Run to return. Run returns only
// after every handler call has ended and its message was acked, moved to a
// delay queue or the parking lot, or requeued, so nothing is in flight
// afterwards.
func (p *runningProcessor) stop(t *testing.T) {
	t.Helper()
	p.stopOnce.Do(func() {
		p.cancel()
		waitRun(t, "processor", p.done)
	})
}

// recorder is a route handler that keeps every message it receives. Handle
// sends each message to a buffered channel, and the test goroutine moves
// them into received as it waits.
type recorder struct {
	messages chan *contract.Message
	received []*contract.Message // only the test goroutine reads and writes it
}

// newRecorder returns a recorder whose channel buffers capacity messages. A
// handler call blocks when the buffer is full, so capacity should exceed the
// number of messages a test expects.
func newRecorder(capacity int) *recorder {
	return &recorder{messages: make(chan *contract.Message, capacity)}
}

// Handle records msg. It returns ctx's error when the buffer stays full
// until the handler's deadline.
func (r *recorder) Handle(ctx context.Context, msg *contract.Message) error {
	select {
	case r.messages <- msg:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// route returns the route routeName, bound to every routing key, with r as
// its handler.
func (r *recorder) route() consume.Route {
	return consume.Route{
		Route:   topology.Route{Name: routeName, Bindings: []string{"#"}},
		Handler: r,
	}
}

// waitFor moves recorded messages into received until done returns true.
// It fails the test when that takes longer than arrivalTimeout.
func (r *recorder) waitFor(t *testing.T, what string, done func() bool) {
	t.Helper()
	timer := time.NewTimer(arrivalTimeout)
	defer timer.Stop()
	for !done() {
		select {
		case msg := <-r.messages:
			r.received = append(r.received, msg)
		case <-timer.C:
			t.Fatalf("timed out after %s waiting for %s; %d messages received", arrivalTimeout, what, len(r.received))
		}
	}
}

// waitForID waits until a message with the id has been recorded and returns
// the first one.
func (r *recorder) waitForID(t *testing.T, id string) *contract.Message {
	t.Helper()
	var found *contract.Message
	r.waitFor(t, "message "+id, func() bool {
		found = r.find(id)
		return found != nil
	})
	return found
}

// find returns the first received message with the id, or nil.
func (r *recorder) find(id string) *contract.Message {
	for _, msg := range r.received {
		if msg.ID == id {
			return msg
		}
	}
	return nil
}

// collect moves the messages still buffered into received without waiting.
// Call it after the processor stopped, when no handler can add more.
func (r *recorder) collect() {
	for {
		select {
		case msg := <-r.messages:
			r.received = append(r.received, msg)
		default:
			return
		}
	}
}

// countByID returns how many received messages have each id.
func (r *recorder) countByID() map[string]int {
	counts := map[string]int{}
	for _, msg := range r.received {
		counts[msg.ID]++
	}
	return counts
}

// acceptedResponse is the JSON body of ingest's 202 response.
type acceptedResponse struct {
	ID         string `json:"id"`
	RoutingKey string `json:"routing_key"`
}

// newHTTPClient returns a client with its own keep-alive connection pool,
// whose idle connections a cleanup closes.
func newHTTPClient(t *testing.T) *http.Client {
	client := &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConnsPerHost: 64,
			IdleConnTimeout:     30 * time.Second,
		},
	}
	t.Cleanup(client.CloseIdleConnections)
	return client
}

// postWebhook posts body with header to baseURL/webhooks/<source> and
// returns the decoded 202 response. Any other status is an error that
// contains the response body.
func postWebhook(ctx context.Context, client *http.Client, baseURL, source string, header http.Header, body []byte) (acceptedResponse, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, baseURL+"/webhooks/"+source, bytes.NewReader(body))
	if err != nil {
		return acceptedResponse{}, fmt.Errorf("build request: %w", err)
	}
	req.Header = header.Clone()

	resp, err := client.Do(req)
	if err != nil {
		return acceptedResponse{}, fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		return acceptedResponse{}, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return acceptedResponse{}, fmt.Errorf("status %d, want 202; body %q", resp.StatusCode, respBody)
	}
	var accepted acceptedResponse
	if err := json.Unmarshal(respBody, &accepted); err != nil {
		return acceptedResponse{}, fmt.Errorf("decode 202 body %q: %w", respBody, err)
	}
	return accepted, nil
}

// mustPost posts a webhook like postWebhook and fails the test unless ingest
// responds with 202.
func mustPost(t *testing.T, client *http.Client, baseURL, source string, header http.Header, body []byte) acceptedResponse {
	t.Helper()
	accepted, err := postWebhook(t.Context(), client, baseURL, source, header, body)
	if err != nil {
		t.Fatalf("post to /webhooks/%s: %v", source, err)
	}
	return accepted
}

// postMarker posts a small webhook with a new delivery id to the source
// "marker" and returns that id. Ingest responds with 202 only after the broker
// confirmed a message, so the marker is enqueued after every webhook that
// was accepted before it. When a handler receives the marker, the broker has
// already delivered every earlier message of that queue to the processor.
// Handlers run concurrently, though, so a test that counts handled messages
// stops the processor first.
func postMarker(t *testing.T, client *http.Client, baseURL string) string {
	t.Helper()
	id := "marker-" + randomHex(8)
	header := newHeader(
		"Content-Type", "application/json",
		"X-GitHub-Event", "marker",
		"X-GitHub-Delivery", id,
	)
	accepted := mustPost(t, client, baseURL, markerSource, header, []byte(`{"marker":true}`))
	if accepted.ID != id {
		t.Fatalf("marker accepted with id %q, want %q", accepted.ID, id)
	}
	return id
}

// randomHex returns n random bytes in hexadecimal.
func randomHex(n int) string {
	buf := make([]byte, n)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}
