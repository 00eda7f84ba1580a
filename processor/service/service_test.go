package service_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
	"github.com/hookbus/hookbus/processor/service"
)

// TestMain fails the package when a goroutine outlives the tests. Every
// connection the tests open is closed by a cleanup, so no amqp091-go
// goroutine needs to be ignored.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testRoute is the name of the route most tests consume.
const testRoute = "test"

// waitTimeout bounds every wait for the broker or the service. It is a
// deadline for failing tests, not an expected duration.
const waitTimeout = 20 * time.Second

// testConfig returns a valid configuration for the namespace with an HTTP
// listener on a free loopback port.
func testConfig(url string, names topology.Names) service.Config {
	return service.Config{
		Broker:         config.Broker{AMQPURL: url, Namespace: names.Namespace()},
		Log:            config.Log{LogLevel: "debug", LogFormat: "text"},
		Addr:           "127.0.0.1:0",
		Prefetch:       10,
		Concurrency:    4,
		HandlerTimeout: 10 * time.Second,
		ShutdownGrace:  10 * time.Second,
		RetryDelays:    testRetrySchedule.Delays,
		MaxAttempts:    1,
	}
}

// unreachableNamespace is the namespace of tests that point the service at
// a port where no broker listens; nothing needs deleting there.
const unreachableNamespace = "unreachable"

// testRetrySchedule is the retry schedule of testConfig. Its delay queues
// are deleted by start's cleanup.
var testRetrySchedule = topology.RetrySchedule{Delays: []time.Duration{50 * time.Millisecond}}

// testLogger writes the service's log lines to the test log.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// running is a service whose Run runs in a goroutine of the test.
type running struct {
	svc    *service.Service
	cancel context.CancelFunc
	done   chan error // receives Run's result
}

// start runs a new service and stops it when the test ends. It waits until
// the HTTP listener is open.
func start(t *testing.T, cfg service.Config, routes ...consume.Route) *running {
	t.Helper()
	return startLogged(t, cfg, testLogger(t), routes...)
}

// startLogged is start with a logger of the caller's choice.
func startLogged(t *testing.T, cfg service.Config, logger *slog.Logger, routes ...consume.Route) *running {
	t.Helper()
	if cfg.Namespace != unreachableNamespace {
		rabbittest.DeleteDelays(t, cfg.AMQPURL, cfg.Names(), cfg.RetryPolicy().RetrySchedule)
	}
	svc, err := service.New(cfg, routes, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{svc: svc, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-r.done:
		case <-time.After(waitTimeout):
			t.Errorf("Run did not return within %s of the test's end", waitTimeout)
		}
	})

	select {
	case <-svc.Started():
	case <-time.After(waitTimeout):
		t.Fatal("Started not closed")
	}
	if svc.Addr() == "" {
		t.Fatalf("Addr is empty after Started; Run returned %v", r.wait(t))
	}
	return r
}

// stop cancels Run's context and returns what Run returned.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.cancel()
	return r.wait(t)
}

// wait returns what Run returned, failing the test when it does not return
// in time.
func (r *running) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		return err
	case <-time.After(waitTimeout):
		t.Fatalf("Run did not return within %s", waitTimeout)
		return nil
	}
}

// returned reports whether Run has returned, without waiting.
func (r *running) returned() bool {
	select {
	case err := <-r.done:
		r.done <- err
		return true
	default:
		return false
	}
}

// get sends a GET request to the service's HTTP server and returns the
// status and body.
func (r *running) get(t *testing.T, path string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get("http://" + r.svc.Addr() + path)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return resp.StatusCode, string(body)
}

// waitReady polls /readyz until it returns status 200.
func (r *running) waitReady(t *testing.T) {
	t.Helper()
	waitFor(t, "/readyz to return 200", func() bool {
		if r.returned() {
			t.Fatalf("Run returned before the service was ready: %v", <-r.done)
		}
		status, _ := r.get(t, "/readyz")
		return status == http.StatusOK
	})
}

// waitFor polls condition until it holds, failing the test after
// waitTimeout.
func waitFor(t *testing.T, what string, condition func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !condition() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// confirmChannel opens a channel in confirm mode, declares the namespace's
// shared objects on it, and closes it when the test ends.
func confirmChannel(t *testing.T, url string, names topology.Names) *amqp.Channel {
	t.Helper()
	ch := rabbittest.Channel(t, url)
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("enable confirms: %v", err)
	}
	if err := topology.Declare(ch, names); err != nil {
		t.Fatalf("declare topology: %v", err)
	}
	return ch
}

// publish publishes p and waits for the broker's ack.
func publish(t *testing.T, ch *amqp.Channel, exchange, key string, p amqp.Publishing) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, p)
	if err != nil {
		t.Fatalf("publish to %q with key %q: %v", exchange, key, err)
	}
	acked, err := confirm.WaitContext(ctx)
	if err != nil {
		t.Fatalf("wait for confirm: %v", err)
	}
	if !acked {
		t.Fatalf("broker nacked the message to %q with key %q", exchange, key)
	}
}

// publishMessage encodes msg by the contract and publishes it to the events
// exchange with its routing key.
func publishMessage(t *testing.T, ch *amqp.Channel, names topology.Names, msg *contract.Message) amqp.Publishing {
	t.Helper()
	p, err := msg.Encode()
	if err != nil {
		t.Fatalf("encode: %v", err)
	}
	publish(t, ch, names.Exchange(), msg.RoutingKey(), p)
	return p
}

// requireQueueEmpty fails the test unless queue holds no message. Call it
// after the service has stopped. A marker message goes in last and must be
// the first to come out: a message that a closed consumer channel left
// unacknowledged goes back to the front of a quorum queue, so it cannot
// hide behind the marker.
func requireQueueEmpty(t *testing.T, ch *amqp.Channel, queue string) {
	t.Helper()
	marker := "marker-" + randomID()
	publish(t, ch, "", queue, amqp.Publishing{MessageId: marker, Body: []byte("marker")})

	got := rabbittest.Drain(t, ch, queue, 1, waitTimeout)

	if len(got) != 1 {
		t.Fatalf("queue %s: marker message did not arrive", queue)
	}
	if got[0].MessageId != marker {
		t.Errorf("queue %s still holds message %q (redelivered %v), want it empty", queue, got[0].MessageId, got[0].Redelivered)
	}
}

func randomID() string {
	buf := make([]byte, 8)
	_, _ = rand.Read(buf)
	return hex.EncodeToString(buf)
}

// newMessage returns a contract message from source "shop" with a body that
// is not valid UTF-8, to check that bodies travel byte for byte.
func newMessage() *contract.Message {
	return &contract.Message{
		ID:          "delivery-" + randomID(),
		Source:      "shop",
		EventType:   "orders/create",
		ContentType: "application/json",
		ReceivedAt:  time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC),
		Header: map[string][]string{
			"X-Shop-Topic":    {"orders/create"},
			"X-Shop-Hmac":     {"c2lnbmF0dXJl"},
			"Accept-Encoding": {"gzip", "br"},
		},
		Meta: map[string]string{"verified-by": "hmac-sha256"},
		Body: []byte("{\"id\":1,\"note\":\"\xff\xfe raw\"}\n"),
	}
}

// recordingHandler sends every message it handles to a channel and then
// returns what respond returns.
type recordingHandler struct {
	calls    atomic.Int32
	received chan *contract.Message
	respond  func(ctx context.Context, msg *contract.Message) error
}

func newRecordingHandler(respond func(ctx context.Context, msg *contract.Message) error) *recordingHandler {
	if respond == nil {
		respond = func(context.Context, *contract.Message) error { return nil }
	}
	return &recordingHandler{received: make(chan *contract.Message, 100), respond: respond}
}

func (h *recordingHandler) Handle(ctx context.Context, msg *contract.Message) error {
	h.calls.Add(1)
	h.received <- msg
	return h.respond(ctx, msg)
}

// next returns the next message the handler received.
func (h *recordingHandler) next(t *testing.T) *contract.Message {
	t.Helper()
	select {
	case msg := <-h.received:
		return msg
	case <-time.After(waitTimeout):
		t.Fatalf("handler received no message within %s", waitTimeout)
		return nil
	}
}

func testRouteWith(h consume.Handler) consume.Route {
	return consume.Route{Route: topology.Route{Name: testRoute, Bindings: []string{"#"}}, Handler: h}
}

// requireParked takes one message from the parking lot and checks the
// parking headers and that the original body, properties and headers are
// unchanged.
func requireParked(t *testing.T, ch *amqp.Channel, names topology.Names, original amqp.Publishing, routingKey, reason string) amqp.Delivery {
	t.Helper()
	got := rabbittest.Drain(t, ch, names.ParkedQueue(), 1, waitTimeout)
	if len(got) != 1 {
		t.Fatalf("no message in %s within %s", names.ParkedQueue(), waitTimeout)
	}
	d := got[0]

	if string(d.Body) != string(original.Body) {
		t.Errorf("parked body = %q, want %q", d.Body, original.Body)
	}
	if d.MessageId != original.MessageId {
		t.Errorf("parked message id = %q, want %q", d.MessageId, original.MessageId)
	}
	if d.ContentType != original.ContentType {
		t.Errorf("parked content type = %q, want %q", d.ContentType, original.ContentType)
	}
	if d.Type != original.Type {
		t.Errorf("parked type = %q, want %q", d.Type, original.Type)
	}
	if d.AppId != original.AppId {
		t.Errorf("parked app id = %q, want %q", d.AppId, original.AppId)
	}
	if d.DeliveryMode != amqp.Persistent {
		t.Errorf("parked delivery mode = %d, want persistent", d.DeliveryMode)
	}
	// The AMQP timestamp property counts whole seconds.
	if want := original.Timestamp.Truncate(time.Second); !d.Timestamp.Equal(want) {
		t.Errorf("parked timestamp = %s, want %s", d.Timestamp, want)
	}
	for key, value := range original.Headers {
		if _, isList := value.([]any); isList {
			continue // compared below by the handler-facing test
		}
		if d.Headers[key] != value {
			t.Errorf("parked header %s = %v, want %v", key, d.Headers[key], value)
		}
	}

	if got := d.Headers[consume.HeaderParkedReason]; got != reason {
		t.Errorf("header %s = %v, want %q", consume.HeaderParkedReason, got, reason)
	}
	if got, _ := d.Headers[consume.HeaderError].(string); got == "" {
		t.Errorf("header %s is empty", consume.HeaderError)
	}
	if got := d.Headers[consume.HeaderRoute]; got != testRoute {
		t.Errorf("header %s = %v, want %q", consume.HeaderRoute, got, testRoute)
	}
	if got := d.Headers[consume.HeaderRoutingKey]; got != routingKey {
		t.Errorf("header %s = %v, want %q", consume.HeaderRoutingKey, got, routingKey)
	}
	if got, _ := d.Headers[consume.HeaderParkedAt].(string); got == "" {
		t.Errorf("header %s is missing", consume.HeaderParkedAt)
	} else if _, err := time.Parse(time.RFC3339Nano, got); err != nil {
		t.Errorf("header %s = %q is not RFC 3339: %v", consume.HeaderParkedAt, got, err)
	}
	if got := d.Headers[consume.HeaderAttempts]; got != int32(1) {
		t.Errorf("header %s = %v (%T), want int32 1", consume.HeaderAttempts, got, got)
	}
	return d
}

func TestServiceDeliversMessageToHandler(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	handler := newRecordingHandler(nil)
	r := start(t, testConfig(url, names), testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	sent := newMessage()

	publishMessage(t, ch, names, sent)
	got := handler.next(t)

	if string(got.Body) != string(sent.Body) {
		t.Errorf("Body = %q, want %q", got.Body, sent.Body)
	}
	if got.ID != sent.ID {
		t.Errorf("ID = %q, want %q", got.ID, sent.ID)
	}
	if got.Source != sent.Source {
		t.Errorf("Source = %q, want %q", got.Source, sent.Source)
	}
	if got.EventType != sent.EventType {
		t.Errorf("EventType = %q, want %q", got.EventType, sent.EventType)
	}
	if got.ContentType != sent.ContentType {
		t.Errorf("ContentType = %q, want %q", got.ContentType, sent.ContentType)
	}
	if !got.ReceivedAt.Equal(sent.ReceivedAt) {
		t.Errorf("ReceivedAt = %s, want %s", got.ReceivedAt, sent.ReceivedAt)
	}
	if len(got.Header) != len(sent.Header) {
		t.Errorf("Header = %v, want %v", got.Header, sent.Header)
	}
	for name, values := range sent.Header {
		if strings.Join(got.Header[name], "\x00") != strings.Join(values, "\x00") {
			t.Errorf("Header[%s] = %q, want %q", name, got.Header[name], values)
		}
	}
	if got.Meta["verified-by"] != "hmac-sha256" {
		t.Errorf("Meta = %v, want verified-by hmac-sha256", got.Meta)
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if n := handler.calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
	if n := rabbittest.MessageCount(t, ch, names.ParkedQueue()); n != 0 {
		t.Errorf("%s holds %d messages, want 0", names.ParkedQueue(), n)
	}
}

func TestServiceRoutesByBinding(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, "orders", "all")
	orders := newRecordingHandler(nil)
	all := newRecordingHandler(nil)
	r := start(t, testConfig(url, names),
		consume.Route{Route: topology.Route{Name: "orders", Bindings: []string{"shop.orders.#"}}, Handler: orders},
		consume.Route{Route: topology.Route{Name: "all", Bindings: []string{"#"}}, Handler: all},
	)
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	order := newMessage()
	push := &contract.Message{ID: "push-" + randomID(), Source: "github", EventType: "push", Body: []byte("{}")}

	publishMessage(t, ch, names, order)
	publishMessage(t, ch, names, push)
	first, second := all.next(t), all.next(t)
	ordered := orders.next(t)

	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	ids := map[string]bool{first.ID: true, second.ID: true}
	if !ids[order.ID] || !ids[push.ID] {
		t.Errorf("route all received %q and %q, want %q and %q", first.ID, second.ID, order.ID, push.ID)
	}
	if ordered.ID != order.ID {
		t.Errorf("route orders received %q, want %q", ordered.ID, order.ID)
	}
	if n := orders.calls.Load(); n != 1 {
		t.Errorf("route orders handled %d messages, want 1", n)
	}
}

func TestServiceParksHandlerError(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	handler := newRecordingHandler(func(context.Context, *contract.Message) error {
		return errors.New("downstream rejected the order")
	})
	r := start(t, testConfig(url, names), testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	sent := newMessage()

	original := publishMessage(t, ch, names, sent)
	parked := requireParked(t, ch, names, original, sent.RoutingKey(), consume.ReasonAttemptsExhausted)

	if got, _ := parked.Headers[consume.HeaderError].(string); !strings.Contains(got, "downstream rejected the order") {
		t.Errorf("header %s = %q, want the handler's error", consume.HeaderError, got)
	}
	list, _ := parked.Headers["http.accept-encoding"].([]any)
	if len(list) != 2 || list[0] != "gzip" || list[1] != "br" {
		t.Errorf("parked header http.accept-encoding = %v, want [gzip br]", parked.Headers["http.accept-encoding"])
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
	if n := handler.calls.Load(); n != 1 {
		t.Errorf("handler called %d times, want 1", n)
	}
}

func TestServiceParksContractViolation(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	handler := newRecordingHandler(nil)
	r := start(t, testConfig(url, names), testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	// A message without the hookbus-contract header, as a publisher that
	// does not know the contract would send it.
	original := amqp.Publishing{
		MessageId:    "foreign-" + randomID(),
		ContentType:  "text/plain",
		DeliveryMode: amqp.Persistent,
		Headers:      amqp.Table{"hookbus-source": "shop", "x-origin": "script"},
		Body:         []byte("not a webhook"),
	}
	const routingKey = "shop.orders.create"

	publish(t, ch, names.Exchange(), routingKey, original)
	parked := requireParked(t, ch, names, original, routingKey, consume.ReasonContractViolation)

	if got, _ := parked.Headers[consume.HeaderError].(string); !strings.Contains(got, contract.HeaderContract) {
		t.Errorf("header %s = %q, want it to name %s", consume.HeaderError, got, contract.HeaderContract)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if n := handler.calls.Load(); n != 0 {
		t.Errorf("handler called %d times, want 0", n)
	}
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
}

func TestServiceParksPanicAndKeepsRunning(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	handler := newRecordingHandler(func(_ context.Context, msg *contract.Message) error {
		if string(msg.Body) == "panic" {
			panic("nil map in order handler")
		}
		return nil
	})
	r := start(t, testConfig(url, names), testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	bad := &contract.Message{ID: "bad-" + randomID(), Source: "shop", EventType: "orders/create", Body: []byte("panic")}
	good := &contract.Message{ID: "good-" + randomID(), Source: "shop", EventType: "orders/create", Body: []byte("fine")}

	original := publishMessage(t, ch, names, bad)
	parked := requireParked(t, ch, names, original, bad.RoutingKey(), consume.ReasonPanic)
	publishMessage(t, ch, names, good)

	if got, _ := parked.Headers[consume.HeaderError].(string); !strings.Contains(got, "nil map in order handler") {
		t.Errorf("header %s = %q, want the panic value", consume.HeaderError, got)
	}
	if first := handler.next(t); first.ID != bad.ID {
		t.Errorf("first message = %q, want %q", first.ID, bad.ID)
	}
	if second := handler.next(t); second.ID != good.ID {
		t.Errorf("message after the panic = %q, want %q", second.ID, good.ID)
	}
	if r.returned() {
		t.Fatal("Run returned after a handler panic")
	}
	if status, body := r.get(t, "/readyz"); status != http.StatusOK {
		t.Errorf("/readyz after a handler panic = %d %s, want 200", status, body)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
}

func TestServiceParksHandlerTimeout(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	handler := newRecordingHandler(func(ctx context.Context, _ *contract.Message) error {
		<-ctx.Done()
		return ctx.Err()
	})
	cfg := testConfig(url, names)
	cfg.HandlerTimeout = 200 * time.Millisecond
	r := start(t, cfg, testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	sent := newMessage()

	original := publishMessage(t, ch, names, sent)
	parked := requireParked(t, ch, names, original, sent.RoutingKey(), consume.ReasonTimeout)

	if got, _ := parked.Headers[consume.HeaderError].(string); !strings.Contains(got, "timed out after 200ms") {
		t.Errorf("header %s = %q, want it to give the timeout", consume.HeaderError, got)
	}
	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
}

func TestServiceReadinessAndMetrics(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	handler := newRecordingHandler(nil)
	r := start(t, testConfig(url, names), testRouteWith(handler))

	r.waitReady(t)
	status, body := r.get(t, "/readyz")
	var ready service.ReadyStatus
	if err := json.Unmarshal([]byte(body), &ready); err != nil {
		t.Fatalf("/readyz body %q is not JSON: %v", body, err)
	}
	if !ready.Ready || len(ready.NotReady) != 0 {
		t.Errorf("/readyz = %d %s, want ready with nothing listed", status, body)
	}
	if !r.svc.Ready() {
		t.Error("Ready = false while /readyz returns 200")
	}
	if status, _ := r.get(t, "/healthz"); status != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", status)
	}

	ch := confirmChannel(t, url, names)
	publishMessage(t, ch, names, newMessage())
	handler.next(t)
	wantLines := []string{
		`hookbus_processor_deliveries_total{outcome="acked",route="test"} 1`,
		`hookbus_processor_deliveries_total{outcome="parked",route="test"} 0`,
		`hookbus_processor_deliveries_total{outcome="requeued",route="test"} 0`,
		`hookbus_processor_handler_duration_seconds_count{route="test"} 1`,
		`hookbus_processor_ready 1`,
	}
	var metrics string
	waitFor(t, "the delivery to be counted in /metrics", func() bool {
		_, metrics = r.get(t, "/metrics")
		return strings.Contains(metrics, wantLines[0])
	})
	for _, line := range wantLines {
		if !strings.Contains(metrics, line+"\n") {
			t.Errorf("/metrics has no line %q", line)
		}
	}
	if !strings.Contains(metrics, "go_goroutines ") {
		t.Error("/metrics has no Go runtime metrics")
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
}

// closingListener is a TCP server that accepts connections and closes them
// at once, so an AMQP client never completes its handshake.
func closingListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			_ = conn.Close()
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

func TestServiceNotReadyWithoutBroker(t *testing.T) {
	names, err := topology.NewNames(unreachableNamespace)
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("amqp://guest:guest@"+closingListener(t)+"/", names)
	r := start(t, cfg, testRouteWith(newRecordingHandler(nil)))

	status, body := r.get(t, "/readyz")
	if status != http.StatusServiceUnavailable {
		t.Errorf("/readyz = %d, want 503", status)
	}
	var ready service.ReadyStatus
	if err := json.Unmarshal([]byte(body), &ready); err != nil {
		t.Fatalf("/readyz body %q is not JSON: %v", body, err)
	}
	if ready.Ready {
		t.Errorf("/readyz body %s says ready", body)
	}
	for _, part := range []string{"broker connection", "route consumers", "parking publisher"} {
		if !strings.Contains(body, part) {
			t.Errorf("/readyz body %s does not list %q", body, part)
		}
	}
	if status, _ := r.get(t, "/healthz"); status != http.StatusOK {
		t.Errorf("/healthz = %d, want 200", status)
	}
	if _, metrics := r.get(t, "/metrics"); !strings.Contains(metrics, "hookbus_processor_ready 0\n") {
		t.Error("/metrics has no line hookbus_processor_ready 0")
	}
	if r.svc.Ready() {
		t.Error("Ready = true without a broker")
	}

	if err := r.stop(t); err != nil {
		t.Fatalf("Run = %v, want nil after cancel while reconnecting", err)
	}
	if err := r.svc.Run(context.Background()); !errors.Is(err, service.ErrAlreadyRun) {
		t.Errorf("second Run = %v, want ErrAlreadyRun", err)
	}
}

func TestServiceShutdownWaitsForHandler(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	release := make(chan struct{})
	var finished atomic.Bool
	handler := newRecordingHandler(func(ctx context.Context, _ *contract.Message) error {
		select {
		case <-release:
			finished.Store(true)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	cfg := testConfig(url, names)
	cfg.ShutdownGrace = waitTimeout
	r := start(t, cfg, testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	sent := newMessage()
	publishMessage(t, ch, names, sent)
	handler.next(t)

	r.cancel()
	waitFor(t, "the consumer to stop", func() bool { return !r.svc.Ready() })
	if r.returned() {
		t.Fatal("Run returned while a handler was running")
	}
	if status, _ := r.get(t, "/healthz"); status != http.StatusOK {
		t.Errorf("/healthz during shutdown = %d, want 200", status)
	}
	close(release)
	err := r.wait(t)

	if err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if !finished.Load() {
		t.Error("handler did not finish before Run returned")
	}
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
	if n := rabbittest.MessageCount(t, ch, names.ParkedQueue()); n != 0 {
		t.Errorf("%s holds %d messages, want 0", names.ParkedQueue(), n)
	}
}

func TestServiceShutdownRequeuesAfterGrace(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	handler := newRecordingHandler(func(ctx context.Context, _ *contract.Message) error {
		<-ctx.Done()
		return ctx.Err()
	})
	cfg := testConfig(url, names)
	cfg.ShutdownGrace = 200 * time.Millisecond
	r := start(t, cfg, testRouteWith(handler))
	r.waitReady(t)
	ch := confirmChannel(t, url, names)
	sent := newMessage()
	publishMessage(t, ch, names, sent)
	handler.next(t)

	err := r.stop(t)

	if err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	got := rabbittest.Drain(t, ch, names.RouteQueue(testRoute), 1, waitTimeout)
	if len(got) != 1 {
		t.Fatalf("message not back in %s", names.RouteQueue(testRoute))
	}
	if got[0].MessageId != sent.ID {
		t.Errorf("message in route queue = %q, want %q", got[0].MessageId, sent.ID)
	}
	if !got[0].Redelivered {
		t.Error("requeued message is not marked redelivered")
	}
	if n := rabbittest.MessageCount(t, ch, names.ParkedQueue()); n != 0 {
		t.Errorf("%s holds %d messages, want 0", names.ParkedQueue(), n)
	}
}

func TestServiceInequivalentQueueFails(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	queue := names.RouteQueue(testRoute)
	ch := rabbittest.Channel(t, url)
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatalf("declare classic queue %s: %v", queue, err)
	}
	handler := newRecordingHandler(nil)
	r := start(t, testConfig(url, names), testRouteWith(handler))

	err := r.wait(t)

	if err == nil {
		t.Fatal("Run = nil, want an error about the queue's arguments")
	}
	if !strings.Contains(err.Error(), queue) {
		t.Errorf("error does not name queue %s: %v", queue, err)
	}
	if !strings.Contains(err.Error(), "inequivalent arg") {
		t.Errorf("error does not give the broker's reason: %v", err)
	}
	if !rabbit.IsPermanent(err) {
		t.Errorf("rabbit.IsPermanent(%v) = false, want true", err)
	}
	if !topology.IsPreconditionFailed(err) {
		t.Errorf("topology.IsPreconditionFailed(%v) = false, want true", err)
	}
	if n := handler.calls.Load(); n != 0 {
		t.Errorf("handler called %d times, want 0", n)
	}
}

func TestNewRejectsInvalidInput(t *testing.T) {
	names, err := topology.NewNames("unused")
	if err != nil {
		t.Fatal(err)
	}
	valid := testConfig(rabbittest.DefaultURL, names)
	handler := newRecordingHandler(nil)
	invalid := valid
	invalid.Prefetch = 0

	tests := []struct {
		name   string
		cfg    service.Config
		routes []consume.Route
		want   string
	}{
		{"invalid config", invalid, []consume.Route{testRouteWith(handler)}, "HOOKBUS_PREFETCH"},
		{"no routes", valid, nil, "no routes"},
		{"route without handler", valid, []consume.Route{{Route: topology.Route{Name: "x", Bindings: []string{"#"}}}}, `route "x" has no handler`},
		{"invalid route name", valid, []consume.Route{{Route: topology.Route{Name: "Orders\xff"}, Handler: handler}}, "invalid name"},
		{"duplicate route", valid, []consume.Route{testRouteWith(handler), testRouteWith(handler)}, "duplicate route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc, err := service.New(tt.cfg, tt.routes, testLogger(t))

			if err == nil {
				t.Fatalf("New = %v, nil; want an error containing %q", svc, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New error = %v, want it to contain %q", err, tt.want)
			}
		})
	}
}
