package service_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// outcome is the result of one request sent by a concurrent test.
type outcome struct {
	id     string // the delivery id the request sent
	status int
	body   string
	err    error
}

// postConcurrently starts one goroutine per id, each posting one webhook
// with that id once start is closed. The outcomes are complete after wait
// returns, which a cleanup also calls. The finished channel receives the
// index of each request as it ends.
func postConcurrently(t *testing.T, inst *instance, ids []string, start <-chan struct{}) (outcomes []outcome, finished <-chan int, wait func()) {
	outcomes = make([]outcome, len(ids))
	progress := make(chan int, len(ids))
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait)
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			header := http.Header{
				"Content-Type": {"application/json"},
				"Webhook-Id":   {id},
			}
			resp, err := inst.send(http.MethodPost, "/webhooks/load", header, []byte(`{"type":"load.test"}`))
			outcomes[i] = outcome{id: id, status: resp.status, body: string(resp.body), err: err}
			progress <- i
		}()
	}
	return outcomes, progress, wg.Wait
}

// messageIDs drains n messages from queue and returns how often each
// message id arrived.
func messageIDs(t *testing.T, ch *amqp.Channel, queue string, n int, timeout time.Duration) map[string]int {
	t.Helper()
	seen := map[string]int{}
	for _, d := range rabbittest.Drain(t, ch, queue, n, timeout) {
		seen[d.MessageId]++
	}
	return seen
}

func TestConcurrentRequestsAllArrive(t *testing.T) {
	const requests = 1000
	url, names, ch := brokerNamespace(t)
	queue := declareTestRoute(t, ch, names)
	inst := startService(t, testConfig(url, names), nil)
	inst.waitReady(t)
	ids := make([]string, requests)
	for i := range ids {
		ids[i] = fmt.Sprintf("load-%04d", i)
	}
	start := make(chan struct{})
	outcomes, _, wait := postConcurrently(t, inst, ids, start)

	close(start)
	wait()

	for _, o := range outcomes {
		if o.err != nil {
			t.Errorf("request %s: %v", o.id, o.err)
			continue
		}
		if o.status != http.StatusAccepted {
			t.Errorf("request %s: status %d, want 202; body: %s", o.id, o.status, o.body)
			continue
		}
		if !strings.Contains(o.body, `"id":"`+o.id+`"`) {
			t.Errorf("request %s: body %s does not carry its id", o.id, o.body)
		}
	}
	seen := messageIDs(t, ch, queue, requests, 60*time.Second)
	if len(seen) != requests {
		t.Errorf("got %d distinct message ids, want %d", len(seen), requests)
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("message %s arrived %d times, want once", id, seen[id])
		}
	}
	if n := rabbittest.MessageCount(t, ch, queue); n != 0 {
		t.Errorf("%d more messages than requests in %s", n, queue)
	}
}

func TestShutdownKeepsAcceptedRequests(t *testing.T) {
	const requests = 200
	url, names, ch := brokerNamespace(t)
	queue := declareTestRoute(t, ch, names)
	inst := startService(t, testConfig(url, names), nil)
	inst.waitReady(t)
	ids := make([]string, requests)
	for i := range ids {
		ids[i] = fmt.Sprintf("shutdown-%03d", i)
	}
	start := make(chan struct{})
	outcomes, finished, wait := postConcurrently(t, inst, ids, start)

	close(start)
	select {
	case <-finished:
	case <-time.After(30 * time.Second):
		t.Fatal("no request finished within 30s")
	}
	runErr := inst.stop(t)
	wait()

	if runErr != nil {
		t.Errorf("Run = %v, want nil", runErr)
	}
	accepted := 0
	for _, o := range outcomes {
		if o.err != nil {
			continue
		}
		if o.status != http.StatusAccepted {
			t.Errorf("request %s: status %d during shutdown, want 202 or no response; body: %s", o.id, o.status, o.body)
			continue
		}
		accepted++
	}
	t.Logf("%d of %d requests accepted before shutdown", accepted, requests)
	if accepted == 0 {
		t.Fatal("no request was accepted")
	}

	seen := messageIDs(t, ch, queue, rabbittest.MessageCount(t, ch, queue), 10*time.Second)
	for _, o := range outcomes {
		if o.err == nil && o.status == http.StatusAccepted && seen[o.id] == 0 {
			t.Errorf("request %s got 202 but its message is not in %s", o.id, queue)
		}
	}
	for id := range seen {
		if !strings.HasPrefix(id, "shutdown-") {
			t.Errorf("unexpected message id %q in %s", id, queue)
		}
	}

	_, err := newHTTPClient().Post(inst.baseURL+"/webhooks/load", "application/json", strings.NewReader(`{}`))
	var opErr *net.OpError
	if !errors.As(err, &opErr) || opErr.Op != "dial" {
		t.Errorf("POST after shutdown = %v, want a dial error", err)
	}
}

func TestConflictingQueueStopsRun(t *testing.T) {
	t.Parallel()
	url, names, ch := brokerNamespace(t)
	// A classic queue under the unrouted queue's name conflicts with the
	// quorum queue that ingest declares.
	if _, err := ch.QueueDeclare(names.UnroutedQueue(), true, false, false, false, nil); err != nil {
		t.Fatalf("declare queue: %v", err)
	}
	logs := &syncBuffer{}
	inst := startService(t, testConfig(url, names), testLogger(t, logs))

	err := inst.result(t, 20*time.Second)

	if err == nil {
		t.Fatal("Run = nil, want an error about the conflicting queue")
	}
	if !strings.Contains(err.Error(), names.UnroutedQueue()) {
		t.Errorf("Run error %q does not name queue %s", err, names.UnroutedQueue())
	}
	if !topology.IsPreconditionFailed(err) {
		t.Errorf("Run error %q does not wrap the broker's PRECONDITION_FAILED", err)
	}
	if !strings.Contains(logs.String(), "broker rejected the connection or the topology permanently") {
		t.Errorf("log lacks the rejected topology; log:\n%s", logs.String())
	}
	if _, err := newHTTPClient().Get(inst.baseURL + "/healthz"); err == nil {
		t.Error("HTTP server still responds after Run returned")
	}
}

func TestShutdownFinishesRequestInFlight(t *testing.T) {
	url, names, ch := brokerNamespace(t)
	queue := declareTestRoute(t, ch, names)
	inst := startService(t, testConfig(url, names), nil)
	inst.waitReady(t)
	body := `{"type":"in.flight"}`

	// With "Expect: 100-continue", net/http sends "100 Continue" when the
	// handler starts to read the body, which proves the request is in the
	// handler before shutdown begins.
	conn, err := net.DialTimeout("tcp", inst.svc.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer conn.Close()
	if err := conn.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatalf("set deadline: %v", err)
	}
	reader := bufio.NewReader(conn)
	_, err = fmt.Fprintf(conn, "POST /webhooks/load HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"+
		"Webhook-Id: in-flight-1\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", inst.svc.Addr(), len(body))
	if err != nil {
		t.Fatalf("write request header: %v", err)
	}
	interim, err := http.ReadResponse(reader, nil)
	if err != nil {
		t.Fatalf("read interim response: %v", err)
	}
	if interim.StatusCode != http.StatusContinue {
		t.Fatalf("interim status = %d, want 100", interim.StatusCode)
	}

	inst.cancel()
	waitListenerClosed(t, inst.svc.Addr())
	if _, err := io.WriteString(conn, body); err != nil {
		t.Fatalf("write request body: %v", err)
	}
	resp, err := http.ReadResponse(reader, nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()

	if resp.StatusCode != http.StatusAccepted {
		t.Errorf("status = %d, want 202; body: %s", resp.StatusCode, data)
	}
	if err := inst.result(t, stopTimeout); err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	seen := messageIDs(t, ch, queue, 1, 10*time.Second)
	if seen["in-flight-1"] != 1 {
		t.Errorf("message in-flight-1 arrived %d times, want once", seen["in-flight-1"])
	}
}

// waitListenerClosed polls until a connection to addr is refused, which
// shows that the HTTP server has closed its listener and is shutting down.
func waitListenerClosed(t *testing.T, addr string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return
		}
		_ = conn.Close()
		time.Sleep(10 * time.Millisecond) // polling interval
	}
	t.Fatalf("%s still accepts connections 10s after shutdown began", addr)
}
