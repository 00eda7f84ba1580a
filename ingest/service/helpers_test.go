package service_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/ingest/service"
	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// testRoute is the route that integration tests declare to keep every
// message ingest publishes.
const testRoute = "all"

// stopTimeout bounds how long a test waits for Run to return after its
// context is cancelled. It is longer than ShutdownGrace in testConfig.
const stopTimeout = 30 * time.Second

// testConfig returns a Config that listens on a free loopback port and
// publishes into the namespace of names. It configures no sources, so the
// service accepts every valid source name without signature verification.
func testConfig(amqpURL string, names topology.Names) service.Config {
	return service.Config{
		Broker:          config.Broker{AMQPURL: amqpURL, Namespace: names.Namespace()},
		Log:             config.Log{LogLevel: "info", LogFormat: "text"},
		Addr:            "127.0.0.1:0",
		MaxBodyBytes:    1 << 20,
		PublishTimeout:  5 * time.Second,
		PublishChannels: 4,
		ReadTimeout:     10 * time.Second,
		ShutdownGrace:   20 * time.Second,
	}
}

// testLogger returns a logger that writes to the test's output and, when w
// is not nil, to w as well.
func testLogger(t *testing.T, w io.Writer) *slog.Logger {
	out := t.Output()
	if w != nil {
		out = io.MultiWriter(out, w)
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

// syncBuffer is a bytes.Buffer that is safe for concurrent writes and reads.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// instance is an ingest service running in the test's process.
type instance struct {
	svc     *service.Service
	baseURL string
	client  *http.Client
	cancel  context.CancelFunc
	done    chan error

	resultOnce sync.Once
	runErr     error
}

// startService creates the service and runs it until the test ends. The
// cleanup cancels Run and fails the test when Run does not return in time.
func startService(t *testing.T, cfg service.Config, logger *slog.Logger) *instance {
	t.Helper()
	if logger == nil {
		logger = testLogger(t, nil)
	}
	svc, err := service.New(cfg, logger)
	if err != nil {
		t.Fatalf("service.New: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	inst := &instance{
		svc:     svc,
		baseURL: "http://" + svc.Addr(),
		client:  newHTTPClient(),
		cancel:  cancel,
		done:    make(chan error, 1),
	}
	go func() {
		inst.done <- svc.Run(ctx)
	}()
	t.Cleanup(func() {
		inst.stop(t)
		inst.client.CloseIdleConnections()
	})
	return inst
}

// stop cancels Run's context and returns Run's result.
func (inst *instance) stop(t *testing.T) error {
	t.Helper()
	inst.cancel()
	return inst.result(t, stopTimeout)
}

// result waits for Run to return and returns its error, failing the test
// when Run has not returned within timeout. Later calls return the same
// error without waiting.
func (inst *instance) result(t *testing.T, timeout time.Duration) error {
	t.Helper()
	inst.resultOnce.Do(func() {
		select {
		case inst.runErr = <-inst.done:
		case <-time.After(timeout):
			inst.cancel()
			t.Fatalf("Run did not return within %s", timeout)
		}
	})
	return inst.runErr
}

// newHTTPClient returns a client with its own connection pool that does not
// follow redirects, so that a 3xx response is visible to the test.
func newHTTPClient() *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			MaxIdleConnsPerHost: 64,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// response is an HTTP response with its body read.
type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request to the service and reads the whole response.
func (inst *instance) do(t *testing.T, method, path string, header http.Header, body []byte) response {
	t.Helper()
	resp, err := inst.send(method, path, header, body)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	return resp
}

// send sends a request like do but returns the transport's error instead of
// failing the test, for use in goroutines and in tests that expect an error.
func (inst *instance) send(method, path string, header http.Header, body []byte) (response, error) {
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, inst.baseURL+path, reader)
	if err != nil {
		return response{}, err
	}
	for name, values := range header {
		req.Header[name] = values
	}
	resp, err := inst.client.Do(req)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return response{}, err
	}
	return response{status: resp.StatusCode, header: resp.Header, body: data}, nil
}

// postJSON posts body as application/json with the extra headers given as
// name-value pairs.
func (inst *instance) postJSON(t *testing.T, source string, body []byte, pairs ...string) response {
	t.Helper()
	header := http.Header{"Content-Type": {"application/json"}}
	for i := 0; i+1 < len(pairs); i += 2 {
		header.Add(pairs[i], pairs[i+1])
	}
	return inst.do(t, http.MethodPost, "/webhooks/"+source, header, body)
}

// waitReady polls GET /readyz until it responds 200, failing the test
// after the deadline.
func (inst *instance) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	last := response{}
	for time.Now().Before(deadline) {
		resp, err := inst.send(http.MethodGet, "/readyz", nil, nil)
		if err == nil && resp.status == http.StatusOK {
			return
		}
		last = resp
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Fatalf("GET /readyz did not respond 200 within 20s; last response %d %s", last.status, last.body)
}

// acceptedBody is the JSON body of a 202 response.
type acceptedBody struct {
	ID         string `json:"id"`
	RoutingKey string `json:"routing_key"`
}

// decodeAccepted checks that resp is a 202 with a JSON body and returns it.
func decodeAccepted(t *testing.T, resp response) acceptedBody {
	t.Helper()
	if resp.status != http.StatusAccepted {
		t.Fatalf("status = %d, want 202; body: %s", resp.status, resp.body)
	}
	var got acceptedBody
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatalf("202 body %q is not JSON: %v", resp.body, err)
	}
	return got
}

// checkErrorBody fails unless resp has the expected status and a JSON body
// whose "error" field is a non-empty message.
func checkErrorBody(t *testing.T, resp response, wantStatus int) {
	t.Helper()
	if resp.status != wantStatus {
		t.Errorf("status = %d, want %d; body: %s", resp.status, wantStatus, resp.body)
		return
	}
	if ct := resp.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var body struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Errorf("error body %q is not JSON: %v", resp.body, err)
		return
	}
	if body.Error == "" {
		t.Errorf("error body %s has no error message", resp.body)
	}
}

// brokerNamespace returns the broker URL, a fresh namespace that is deleted
// when the test ends, and a channel to inspect it with.
func brokerNamespace(t *testing.T) (string, topology.Names, *amqp.Channel) {
	t.Helper()
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	return url, names, rabbittest.Channel(t, url)
}

// declareTestRoute declares the shared topology and a route queue bound to
// every routing key, so that published messages are kept for the test.
func declareTestRoute(t *testing.T, ch *amqp.Channel, names topology.Names) string {
	t.Helper()
	if err := topology.Declare(ch, names); err != nil {
		t.Fatalf("declare topology: %v", err)
	}
	route := topology.Route{Name: testRoute, Bindings: []string{"#"}}
	if err := topology.DeclareRoute(ch, names, route); err != nil {
		t.Fatalf("declare route: %v", err)
	}
	return names.RouteQueue(testRoute)
}

// closedPort returns a loopback port on which nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	_, port, _ := net.SplitHostPort(addr)
	return port
}
