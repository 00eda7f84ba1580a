package service_test

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// rawRequest writes request to the service over a new TCP connection and
// returns the response, so that a test controls the framing byte by byte.
func (inst *instance) rawRequest(t *testing.T, request string) response {
	t.Helper()
	conn, err := net.DialTimeout("tcp", inst.svc.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	if _, err := io.WriteString(conn, request); err != nil {
		t.Fatalf("write request: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response body: %v", err)
	}
	return response{status: resp.StatusCode, header: resp.Header, body: body}
}

func TestReceiveRejectsInvalidRequests(t *testing.T) {
	t.Parallel()
	url, names, ch := brokerNamespace(t)
	queue := declareTestRoute(t, ch, names)
	cfg := testConfig(url, names)
	cfg.MaxBodyBytes = 1024
	inst := startService(t, cfg, nil)
	inst.waitReady(t)

	t.Run("invalid source names", func(t *testing.T) {
		for _, source := range []string{"GitHub", "git.hub", strings.Repeat("a", 65), "a%20b"} {
			resp := inst.postJSON(t, source, []byte(`{"type":"a"}`))
			checkErrorBody(t, resp, http.StatusNotFound)
		}
	})

	t.Run("longest source name", func(t *testing.T) {
		source := strings.Repeat("a", contract.MaxSourceLength)
		got := decodeAccepted(t, inst.postJSON(t, source, []byte(`{"type":"a"}`)))
		if got.RoutingKey != source+".a" {
			t.Errorf("routing_key = %q, want %q", got.RoutingKey, source+".a")
		}
	})

	t.Run("empty body", func(t *testing.T) {
		resp := inst.postJSON(t, "acme", nil)
		checkErrorBody(t, resp, http.StatusBadRequest)
	})

	t.Run("body at the limit", func(t *testing.T) {
		body := jsonBodyOfSize(1024)
		decodeAccepted(t, inst.postJSON(t, "acme", body))
	})

	t.Run("body over the limit with content length", func(t *testing.T) {
		resp := inst.postJSON(t, "acme", jsonBodyOfSize(1025))
		checkErrorBody(t, resp, http.StatusRequestEntityTooLarge)
	})

	t.Run("body over the limit chunked", func(t *testing.T) {
		chunk := strings.Repeat("x", 600)
		request := "POST /webhooks/acme HTTP/1.1\r\n" +
			"Host: " + inst.svc.Addr() + "\r\n" +
			"Content-Type: application/octet-stream\r\n" +
			"Transfer-Encoding: chunked\r\n" +
			"Connection: close\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk) +
			fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk) +
			"0\r\n\r\n"
		resp := inst.rawRequest(t, request)
		checkErrorBody(t, resp, http.StatusRequestEntityTooLarge)
	})

	t.Run("body at the limit chunked", func(t *testing.T) {
		chunk := strings.Repeat("x", 512)
		request := "POST /webhooks/acme HTTP/1.1\r\n" +
			"Host: " + inst.svc.Addr() + "\r\n" +
			"Content-Type: application/octet-stream\r\n" +
			"Transfer-Encoding: chunked\r\n" +
			"Connection: close\r\n\r\n" +
			fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk) +
			fmt.Sprintf("%x\r\n%s\r\n", len(chunk), chunk) +
			"0\r\n\r\n"
		resp := inst.rawRequest(t, request)
		decodeAccepted(t, resp)
	})

	t.Run("header name too long for amqp", func(t *testing.T) {
		resp := inst.postJSON(t, "acme", []byte(`{"type":"a"}`), "X-"+strings.Repeat("n", 300), "1")
		checkErrorBody(t, resp, http.StatusRequestHeaderFieldsTooLarge)
	})

	t.Run("headers over the message limit", func(t *testing.T) {
		// Each empty header costs 7 bytes on the HTTP wire but 14 bytes in
		// the AMQP table, so these headers pass the HTTP server's limit and
		// exceed contract.MaxHeaderBytes.
		var request strings.Builder
		request.WriteString("POST /webhooks/acme HTTP/1.1\r\nHost: " + inst.svc.Addr() + "\r\n")
		request.WriteString("Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n")
		for i := range contract.MaxHeaderBytes/14 + 16 {
			// Base 36 from 1296 ("100") on gives distinct three-byte names.
			fmt.Fprintf(&request, "%s: \r\n", strconv.FormatInt(int64(1296+i), 36))
		}
		request.WriteString("\r\n{}")
		resp := inst.rawRequest(t, request.String())
		checkErrorBody(t, resp, http.StatusRequestHeaderFieldsTooLarge)
	})

	t.Run("headers over the http limit", func(t *testing.T) {
		resp, err := inst.send(http.MethodPost, "/webhooks/acme",
			http.Header{"X-Large": {strings.Repeat("v", 40<<10)}}, []byte(`{}`))
		if err != nil {
			t.Fatalf("POST: %v", err)
		}
		// NOTE: net/http writes this response itself, before any handler
		// runs, so the body is its plain-text status line and not JSON.
		if resp.status != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("status = %d, want 431", resp.status)
		}
	})

	t.Run("content type too long for amqp", func(t *testing.T) {
		resp := inst.do(t, http.MethodPost, "/webhooks/acme",
			http.Header{"Content-Type": {"application/json; x=" + strings.Repeat("y", 300)}}, []byte(`{}`))
		checkErrorBody(t, resp, http.StatusRequestHeaderFieldsTooLarge)
	})

	t.Run("get on webhook path", func(t *testing.T) {
		resp := inst.do(t, http.MethodGet, "/webhooks/x", nil, nil)
		checkErrorBody(t, resp, http.StatusMethodNotAllowed)
	})

	t.Run("trailing slash", func(t *testing.T) {
		for _, method := range []string{http.MethodPost, http.MethodGet} {
			resp := inst.do(t, method, "/webhooks/x/", http.Header{"Content-Type": {"application/json"}}, []byte(`{}`))
			checkErrorBody(t, resp, http.StatusNotFound)
		}
	})

	t.Run("unknown path", func(t *testing.T) {
		resp := inst.postJSON(t, "", []byte(`{}`))
		checkErrorBody(t, resp, http.StatusNotFound)
	})

	// Only the three accepted requests above may reach the queue. They are
	// the longest source name and the two bodies at the limit.
	deliveries := rabbittest.Drain(t, ch, queue, 4, 2*time.Second)
	if len(deliveries) != 3 {
		t.Errorf("got %d messages in %s, want 3 (one per accepted request)", len(deliveries), queue)
	}
}

// jsonBodyOfSize returns a JSON object of exactly n bytes, n at least 10.
func jsonBodyOfSize(n int) []byte {
	return []byte(`{"p":"` + strings.Repeat("x", n-8) + `"}`)
}

func TestReceiveNackedReturns503(t *testing.T) {
	t.Parallel()
	url, names, ch := brokerNamespace(t)
	if err := topology.Declare(ch, names); err != nil {
		t.Fatalf("declare topology: %v", err)
	}
	// A classic queue with room for no message that rejects new ones makes
	// the broker nack every message routed to it.
	full := names.Namespace() + ".test-full"
	_, err := ch.QueueDeclare(full, false, false, false, false, amqp.Table{
		"x-max-length": 0,
		"x-overflow":   "reject-publish",
	})
	if err != nil {
		t.Fatalf("declare queue: %v", err)
	}
	t.Cleanup(func() {
		if _, err := ch.QueueDelete(full, false, false, false); err != nil {
			t.Errorf("delete queue %s: %v", full, err)
		}
	})
	if err := ch.QueueBind(full, "#", names.Exchange(), false, nil); err != nil {
		t.Fatalf("bind queue: %v", err)
	}
	logs := &syncBuffer{}
	inst := startService(t, testConfig(url, names), testLogger(t, logs))
	inst.waitReady(t)

	resp := inst.postJSON(t, "acme", []byte(`{"type":"a"}`), "Webhook-Id", "msg_nacked")

	checkErrorBody(t, resp, http.StatusServiceUnavailable)
	if got := resp.header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After = %q, want %q", got, "5")
	}
	if strings.Contains(string(resp.body), "msg_nacked") {
		t.Errorf("503 body %s names the message id as if it was accepted", resp.body)
	}
	if !strings.Contains(logs.String(), "broker rejected the webhook") {
		t.Errorf("log lacks the rejection; log:\n%s", logs.String())
	}
	checkMetric(t, inst, `hookbus_ingest_requests_total{code="503"} 1`)
	checkMetric(t, inst, `hookbus_ingest_publish_seconds_count{result="failed"} 1`)
	checkNoMetric(t, inst, `hookbus_ingest_requests_total{code="202"}`)
}

func TestReceiveUnroutableReturns503(t *testing.T) {
	t.Parallel()
	url, names, ch := brokerNamespace(t)
	logs := &syncBuffer{}
	inst := startService(t, testConfig(url, names), testLogger(t, logs))
	inst.waitReady(t)
	// Without its alternate exchange, the events exchange cannot place a
	// message that no binding matches, so the broker returns it.
	if err := ch.ExchangeDelete(names.UnroutedExchange(), false, false); err != nil {
		t.Fatalf("delete exchange: %v", err)
	}

	resp := inst.postJSON(t, "acme", []byte(`{"type":"a"}`), "Webhook-Id", "msg_returned")

	checkErrorBody(t, resp, http.StatusServiceUnavailable)
	if got := resp.header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After = %q, want %q", got, "5")
	}
	if !strings.Contains(logs.String(), "broker returned the webhook as unroutable") {
		t.Errorf("log lacks the return; log:\n%s", logs.String())
	}
	if n := rabbittest.MessageCount(t, ch, names.UnroutedQueue()); n != 0 {
		t.Errorf("%s has %d messages, want 0", names.UnroutedQueue(), n)
	}
	checkNoMetric(t, inst, `hookbus_ingest_requests_total{code="202"}`)
}

func TestReceiveWithoutBroker(t *testing.T) {
	t.Parallel()
	url := "amqp://guest:guest@127.0.0.1:" + closedPort(t) + "/"
	names, err := topology.NewNames("test-no-broker")
	if err != nil {
		t.Fatal(err)
	}
	inst := startService(t, testConfig(url, names), nil)

	ready := inst.do(t, http.MethodGet, "/readyz", nil, nil)
	resp := inst.postJSON(t, "acme", []byte(`{"type":"a"}`))
	health := inst.do(t, http.MethodGet, "/healthz", nil, nil)

	if ready.status != http.StatusServiceUnavailable {
		t.Errorf("/readyz status = %d, want 503", ready.status)
	}
	if !strings.Contains(string(ready.body), `"broker_connected":false`) {
		t.Errorf("/readyz body %s does not report the missing broker connection", ready.body)
	}
	checkErrorBody(t, resp, http.StatusServiceUnavailable)
	if got := resp.header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After = %q, want %q", got, "5")
	}
	if health.status != http.StatusOK {
		t.Errorf("/healthz status = %d, want 200", health.status)
	}
	if inst.svc.Ready() {
		t.Error("Ready() = true without a broker")
	}
	if err := inst.stop(t); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}

// checkMetric fails unless /metrics contains the line.
func checkMetric(t *testing.T, inst *instance, line string) {
	t.Helper()
	resp := inst.do(t, http.MethodGet, "/metrics", nil, nil)
	if !strings.Contains(string(resp.body), line+"\n") {
		t.Errorf("/metrics lacks %q", line)
	}
}

// checkNoMetric fails when /metrics has a sample of the series.
func checkNoMetric(t *testing.T, inst *instance, series string) {
	t.Helper()
	resp := inst.do(t, http.MethodGet, "/metrics", nil, nil)
	if strings.Contains(string(resp.body), series+" ") {
		t.Errorf("/metrics has a sample of %s", series)
	}
}
