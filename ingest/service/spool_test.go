package service_test

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/ingest/service"
	"github.com/hookbus/hookbus/ingest/spool"
	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// readiness is the JSON body of GET /readyz.
type readiness struct {
	Status          string `json:"status"`
	BrokerConnected bool   `json:"broker_connected"`
	PublishChannel  bool   `json:"publish_channel"`
	Spool           struct {
		Enabled          bool    `json:"enabled"`
		Messages         int64   `json:"messages"`
		Bytes            int64   `json:"bytes"`
		OldestAgeSeconds float64 `json:"oldest_age_seconds"`
		Full             bool    `json:"full"`
	} `json:"spool"`
}

// spooledBody is the JSON body of a 202 response that may come from the
// spool.
type spooledBody struct {
	ID         string `json:"id"`
	RoutingKey string `json:"routing_key"`
	Spooled    *bool  `json:"spooled"`
}

// readyz returns the status code and body of GET /readyz.
func (inst *instance) readyz(t *testing.T) (int, readiness) {
	t.Helper()
	resp := inst.do(t, http.MethodGet, "/readyz", nil, nil)
	var body readiness
	if err := json.Unmarshal(resp.body, &body); err != nil {
		t.Fatalf("GET /readyz body %q is not JSON: %v", resp.body, err)
	}
	return resp.status, body
}

// waitReadiness polls GET /readyz until cond holds for its body, failing the
// test after timeout with the last body.
func (inst *instance) waitReadiness(t *testing.T, what string, timeout time.Duration, cond func(readiness) bool) readiness {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last readiness
	for time.Now().Before(deadline) {
		resp, err := inst.send(http.MethodGet, "/readyz", nil, nil)
		if err == nil && json.Unmarshal(resp.body, &last) == nil && cond(last) {
			return last
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Fatalf("readiness did not reach %q within %s; last %+v", what, timeout, last)
	return last
}

// waitBrokerUp waits until ingest has a broker connection and an open
// publish channel. With the spool on, /readyz is 200 before that.
func (inst *instance) waitBrokerUp(t *testing.T) {
	t.Helper()
	inst.waitReadiness(t, "broker connected", 20*time.Second, func(r readiness) bool {
		return r.BrokerConnected && r.PublishChannel
	})
}

// waitBrokerDown waits until ingest has noticed that the broker is gone.
func (inst *instance) waitBrokerDown(t *testing.T) {
	t.Helper()
	inst.waitReadiness(t, "broker disconnected", 20*time.Second, func(r readiness) bool {
		return !r.BrokerConnected && !r.PublishChannel
	})
}

// decodeSpooled checks that resp is a 202 whose body reports that the
// webhook was spooled, and returns the body.
func decodeSpooled(t *testing.T, resp response) spooledBody {
	t.Helper()
	if resp.status != http.StatusAccepted {
		t.Fatalf("status = %d, want 202; body: %s", resp.status, resp.body)
	}
	var got spooledBody
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Fatalf("202 body %q is not JSON: %v", resp.body, err)
	}
	if got.Spooled == nil || !*got.Spooled {
		t.Fatalf("202 body %s lacks \"spooled\": true", resp.body)
	}
	return got
}

// proxiedBroker returns the broker URL, a fresh namespace with the test
// route declared, a channel that bypasses the proxy, the route queue, and a
// proxy to the broker.
func proxiedBroker(t *testing.T) (url string, names topology.Names, ch *amqp.Channel, queue string, proxy *rabbittest.Proxy) {
	t.Helper()
	url, names, ch = brokerNamespace(t)
	queue = declareTestRoute(t, ch, names)
	proxy = rabbittest.NewProxy(t, rabbittest.HostPort(t, url))
	return url, names, ch, queue, proxy
}

// spoolConfig returns testConfig through the proxy with the spool on in a
// new temporary directory.
func spoolConfig(t *testing.T, url string, names topology.Names, proxy *rabbittest.Proxy) service.Config {
	cfg := testConfig(proxy.URL(url), names)
	cfg.SpoolDir = t.TempDir()
	cfg.SpoolMaxBytes = 64 << 20
	return cfg
}

func TestSpoolKeepsWebhooksThroughOutage(t *testing.T) {
	t.Parallel()
	const requests = 100
	url, names, ch, queue, proxy := proxiedBroker(t)
	var logs syncBuffer
	inst := startService(t, spoolConfig(t, url, names, proxy), testLogger(t, &logs))
	inst.waitBrokerUp(t)

	// With the broker up, a webhook is published, not spooled.
	resp := inst.postJSON(t, "acme", []byte(`{"type":"before.outage"}`))
	if resp.status != http.StatusAccepted || strings.Contains(string(resp.body), "spooled") {
		t.Fatalf("webhook with the broker up: %d %s, want 202 without spooled", resp.status, resp.body)
	}
	if got := rabbittest.Drain(t, ch, queue, 1, 10*time.Second); len(got) != 1 {
		t.Fatalf("got %d messages before the outage, want 1", len(got))
	}

	proxy.Cut()
	inst.waitBrokerDown(t)

	ids := make([]string, requests)
	for i := range ids {
		ids[i] = fmt.Sprintf("outage-%03d", i)
	}
	start := make(chan struct{})
	outcomes, _, wait := postConcurrently(t, inst, ids, start)
	close(start)
	wait()
	for _, o := range outcomes {
		if o.err != nil {
			t.Fatalf("request %s: %v", o.id, o.err)
		}
		got := decodeSpooled(t, response{status: o.status, body: []byte(o.body)})
		if got.ID != o.id {
			t.Errorf("202 id = %q, want %q", got.ID, o.id)
		}
		if got.RoutingKey != "load.load.test" {
			t.Errorf("202 routing_key = %q, want load.load.test", got.RoutingKey)
		}
	}

	status, ready := inst.readyz(t)
	if status != http.StatusOK {
		t.Errorf("GET /readyz during the outage = %d, want 200 while the spool accepts", status)
	}
	if ready.BrokerConnected {
		t.Errorf("readyz broker_connected = true during the outage")
	}
	if !ready.Spool.Enabled || ready.Spool.Messages != requests || ready.Spool.Full {
		t.Errorf("readyz spool = %+v, want enabled, %d messages, not full", ready.Spool, requests)
	}
	if ready.Spool.Bytes < requests*int64(len(`{"type":"load.test"}`)) {
		t.Errorf("readyz spool bytes = %d, less than the bodies alone", ready.Spool.Bytes)
	}
	if ready.Spool.OldestAgeSeconds <= 0 {
		t.Errorf("readyz spool oldest_age_seconds = %v, want above 0", ready.Spool.OldestAgeSeconds)
	}
	checkMetric(t, inst, fmt.Sprintf("hookbus_ingest_spooled_total %d", requests))
	checkMetric(t, inst, fmt.Sprintf("hookbus_ingest_spool_messages %d", requests))
	checkMetric(t, inst, fmt.Sprintf("hookbus_ingest_spool_bytes %d", ready.Spool.Bytes))
	checkMetric(t, inst, "hookbus_ingest_spool_drained_total 0")
	if n := rabbittest.MessageCount(t, ch, queue); n != 0 {
		t.Errorf("%d messages reached the queue through a cut proxy", n)
	}
	if n := strings.Count(logs.String(), "broker unavailable, spooling webhooks"); n != 1 {
		t.Errorf("the outage warning was logged %d times, want once", n)
	}

	proxy.Restore()
	inst.waitReadiness(t, "spool empty", 60*time.Second, func(r readiness) bool {
		return r.Spool.Messages == 0
	})

	deliveries := rabbittest.Drain(t, ch, queue, requests, 30*time.Second)
	seen := map[string]int{}
	for _, d := range deliveries {
		seen[d.MessageId]++
		msg, err := contract.Decode(&d)
		if err != nil {
			t.Errorf("message %s: %v", d.MessageId, err)
			continue
		}
		if msg.Source != "load" || string(msg.Body) != `{"type":"load.test"}` || d.RoutingKey != "load.load.test" {
			t.Errorf("message %s: source %q, routing key %q, body %q changed in the spool", d.MessageId, msg.Source, d.RoutingKey, msg.Body)
		}
		if got := msg.Header.Get("Webhook-Id"); got != d.MessageId {
			t.Errorf("message %s: HTTP header Webhook-Id = %q, want the message id", d.MessageId, got)
		}
		if d.DeliveryMode != amqp.Persistent {
			t.Errorf("message %s: delivery mode %d, want persistent", d.MessageId, d.DeliveryMode)
		}
	}
	for _, id := range ids {
		if seen[id] != 1 {
			t.Errorf("message %s arrived %d times, want once", id, seen[id])
		}
	}
	if len(seen) != requests {
		t.Errorf("%d distinct messages arrived, want %d", len(seen), requests)
	}
	if n := rabbittest.MessageCount(t, ch, queue); n != 0 {
		t.Errorf("%d extra messages in the queue after the drain", n)
	}

	checkMetric(t, inst, "hookbus_ingest_spool_messages 0")
	checkMetric(t, inst, "hookbus_ingest_spool_bytes 0")
	checkMetric(t, inst, "hookbus_ingest_spool_oldest_age_seconds 0")
	checkMetric(t, inst, fmt.Sprintf("hookbus_ingest_spool_drained_total %d", requests))
	if !strings.Contains(logs.String(), "spool drained") {
		t.Errorf("the log lacks the end of the drain")
	}
}

func TestSpoolFullAnswers503(t *testing.T) {
	t.Parallel()
	url, names, ch, queue, proxy := proxiedBroker(t)
	cfg := spoolConfig(t, url, names, proxy)
	cfg.SpoolMaxBytes = service.MinSpoolBytes
	inst := startService(t, cfg, nil)
	inst.waitBrokerUp(t)
	proxy.Cut()
	inst.waitBrokerDown(t)

	body := jsonBodyOfSize(300 << 10)
	spooled := 0
	var rejected response
	for range 10 {
		resp := inst.postJSON(t, "acme", body)
		if resp.status != http.StatusAccepted {
			rejected = resp
			break
		}
		decodeSpooled(t, resp)
		spooled++
	}
	if spooled != 3 {
		t.Fatalf("%d webhooks of 300 KiB fit in a 1 MiB spool, want 3", spooled)
	}
	checkErrorBody(t, rejected, http.StatusServiceUnavailable)
	if got := rejected.header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After = %q, want 5", got)
	}

	status, ready := inst.readyz(t)
	if status != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz with the broker down and the spool full = %d, want 503", status)
	}
	if !ready.Spool.Full || ready.Spool.Messages != int64(spooled) {
		t.Errorf("readyz spool = %+v, want full with %d messages", ready.Spool, spooled)
	}
	checkMetric(t, inst, fmt.Sprintf("hookbus_ingest_spooled_total %d", spooled))
	checkMetric(t, inst, `hookbus_ingest_requests_total{code="503"} 1`)

	// Once the broker is back, the spool drains and has room again.
	proxy.Restore()
	inst.waitReadiness(t, "spool empty and not full", 60*time.Second, func(r readiness) bool {
		return r.Spool.Messages == 0 && !r.Spool.Full
	})
	if got := rabbittest.Drain(t, ch, queue, spooled, 30*time.Second); len(got) != spooled {
		t.Errorf("%d spooled webhooks arrived, want %d", len(got), spooled)
	}
}

func TestSpoolOffAnswers503(t *testing.T) {
	t.Parallel()
	url, names, ch, queue, proxy := proxiedBroker(t)
	inst := startService(t, testConfig(proxy.URL(url), names), nil)
	inst.waitReady(t)
	proxy.Cut()
	inst.waitReadiness(t, "not ready", 20*time.Second, func(r readiness) bool {
		return r.Status == "not ready"
	})

	resp := inst.postJSON(t, "acme", []byte(`{"type":"a"}`))
	checkErrorBody(t, resp, http.StatusServiceUnavailable)
	if got := resp.header.Get("Retry-After"); got != "5" {
		t.Errorf("Retry-After = %q, want 5", got)
	}
	status, ready := inst.readyz(t)
	if status != http.StatusServiceUnavailable {
		t.Errorf("GET /readyz = %d, want 503", status)
	}
	if ready.Spool.Enabled || ready.Spool.Messages != 0 {
		t.Errorf("readyz spool = %+v, want disabled and empty", ready.Spool)
	}
	checkNoMetric(t, inst, "hookbus_ingest_spooled_total")
	checkNoMetric(t, inst, "hookbus_ingest_spool_messages")

	proxy.Restore()
	inst.waitReady(t)
	if n := rabbittest.MessageCount(t, ch, queue); n != 0 {
		t.Errorf("%d messages in the queue, want 0: the rejected webhook must not be kept", n)
	}
}

func TestSpoolSecondIngestFails(t *testing.T) {
	t.Parallel()
	names, err := topology.NewNames("spool-lock")
	if err != nil {
		t.Fatal(err)
	}
	// No broker is needed: the spool is checked before any connection.
	cfg := testConfig("amqp://guest:guest@127.0.0.1:"+closedPort(t)+"/", names)
	cfg.SpoolDir = filepath.Join(t.TempDir(), "spool")
	cfg.SpoolMaxBytes = service.MinSpoolBytes
	first := startService(t, cfg, nil)
	first.waitReady(t)

	start := time.Now()
	second, err := service.New(cfg, testLogger(t, nil))
	if err == nil {
		t.Fatalf("a second ingest on spool directory %s started; its address is %s", cfg.SpoolDir, second.Addr())
	}
	if !errors.Is(err, spool.ErrLocked) {
		t.Errorf("second New returned %v, want ErrLocked", err)
	}
	if !strings.Contains(err.Error(), cfg.SpoolDir) {
		t.Errorf("error %q does not name the spool directory %s", err, cfg.SpoolDir)
	}
	if elapsed := time.Since(start); elapsed > spool.LockTimeout+5*time.Second {
		t.Errorf("second New took %s to fail", elapsed)
	}

	// Run releases the lock when it returns.
	if err := first.stop(t); err != nil {
		t.Fatalf("first ingest stopped with %v", err)
	}
	third := startService(t, cfg, nil)
	third.waitReady(t)
}

func TestSpoolValidation(t *testing.T) {
	names, err := topology.NewNames("spool-config")
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig("amqp://guest:guest@127.0.0.1:5672/", names)
	cfg.SpoolMaxBytes = 0
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with the spool off and SPOOL_MAX_BYTES 0: %v", err)
	}
	cfg.SpoolDir = t.TempDir()
	cfg.SpoolMaxBytes = service.MinSpoolBytes - 1
	err = cfg.Validate()
	if err == nil || !strings.Contains(err.Error(), config.Prefix+"_SPOOL_MAX_BYTES") {
		t.Errorf("Validate with SPOOL_MAX_BYTES below 1 MiB = %v, want an error naming the variable", err)
	}
	cfg.SpoolMaxBytes = service.MinSpoolBytes
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate with SPOOL_MAX_BYTES of 1 MiB: %v", err)
	}
}

// ingestProcess is the ingest binary running as a child process.
type ingestProcess struct {
	cmd  *exec.Cmd
	inst *instance
	logs *syncBuffer
	// exited is closed when the process has exited and its output is read.
	exited chan struct{}
}

// buildIngest compiles the ingest command into a temporary folder.
func buildIngest(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found in PATH: %v", err)
	}
	binary := filepath.Join(t.TempDir(), "ingest")
	build := exec.Command(goTool, "build", "-o", binary, "github.com/hookbus/hookbus/ingest/cmd/ingest")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return binary
}

// startIngest runs binary with the environment of this process without its
// HOOKBUS_ variables plus env, and waits until it logs its address. The
// test's cleanup kills the process if it still runs.
func startIngest(t *testing.T, binary string, env ...string) *ingestProcess {
	t.Helper()
	cmd := exec.Command(binary)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.Prefix+"_") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ingest: %v", err)
	}

	p := &ingestProcess{cmd: cmd, logs: &syncBuffer{}, exited: make(chan struct{})}
	addrs := make(chan string, 1)
	var reader sync.WaitGroup
	reader.Add(1)
	go func() {
		defer reader.Done()
		scanner := bufio.NewScanner(stderr)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		for scanner.Scan() {
			line := scanner.Text()
			_, _ = fmt.Fprintln(p.logs, line)
			var entry struct {
				Msg  string `json:"msg"`
				Addr string `json:"addr"`
			}
			if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "ingest started" {
				addrs <- entry.Addr
			}
		}
	}()
	go func() {
		reader.Wait()
		_ = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		t.Logf("ingest output:\n%s", p.logs)
	})

	select {
	case addr := <-addrs:
		p.inst = &instance{baseURL: "http://" + addr, client: newHTTPClient()}
		t.Cleanup(p.inst.client.CloseIdleConnections)
	case <-p.exited:
		t.Fatalf("ingest exited before it started: %v\n%s", cmd.ProcessState, p.logs)
	case <-time.After(30 * time.Second):
		t.Fatalf("ingest did not log its address within 30s\n%s", p.logs)
	}
	return p
}

// wait waits for the process to exit and returns its exit status.
func (p *ingestProcess) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		t.Fatalf("ingest did not exit within %s", timeout)
		return -1
	}
}

// waitSpoolEmpty polls GET /readyz until the spool is empty, and fails the
// test when the process exits first or timeout passes.
func (p *ingestProcess) waitSpoolEmpty(t *testing.T, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last readiness
	for time.Now().Before(deadline) {
		select {
		case <-p.exited:
			t.Fatalf("ingest exited with %v while draining its spool", p.cmd.ProcessState)
		default:
		}
		resp, err := p.inst.send(http.MethodGet, "/readyz", nil, nil)
		if err == nil && json.Unmarshal(resp.body, &last) == nil && last.Spool.Enabled && last.Spool.Messages == 0 {
			return
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Fatalf("the spool was not empty within %s; last readiness %+v", timeout, last)
}

func TestSpoolSurvivesKill(t *testing.T) {
	t.Parallel()
	const requests = 50
	binary := buildIngest(t)
	url, names, ch, queue, proxy := proxiedBroker(t)
	spoolDir := t.TempDir()
	env := []string{
		config.Prefix + "_AMQP_URL=" + proxy.URL(url),
		config.Prefix + "_NAMESPACE=" + names.Namespace(),
		config.Prefix + "_INGEST_ADDR=127.0.0.1:0",
		config.Prefix + "_SPOOL_DIR=" + spoolDir,
		config.Prefix + "_LOG_FORMAT=json",
		config.Prefix + "_LOG_LEVEL=info",
	}

	proxy.Cut()
	first := startIngest(t, binary, env...)
	first.inst.waitReady(t)
	ids := make([]string, requests)
	for i := range ids {
		ids[i] = fmt.Sprintf("kill-%02d", i)
		resp := first.inst.postJSON(t, "acme", []byte(`{"type":"order.created"}`), "Webhook-Id", ids[i])
		if got := decodeSpooled(t, resp); got.ID != ids[i] {
			t.Fatalf("202 id = %q, want %q", got.ID, ids[i])
		}
	}
	if status, ready := first.inst.readyz(t); status != http.StatusOK || ready.Spool.Messages != requests {
		t.Fatalf("GET /readyz before the kill = %d with spool %+v, want 200 with %d messages", status, ready.Spool, requests)
	}

	if err := first.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("kill ingest: %v", err)
	}
	first.wait(t, 10*time.Second)
	proxy.Restore()

	second := startIngest(t, binary, env...)
	second.waitSpoolEmpty(t, 60*time.Second)
	// Every message left the spool after its confirm, so all copies are
	// in the queue now.
	deliveries := rabbittest.Drain(t, ch, queue, rabbittest.MessageCount(t, ch, queue), 10*time.Second)

	seen := map[string]int{}
	for _, d := range deliveries {
		seen[d.MessageId]++
	}
	var duplicates []string
	for id, n := range seen {
		if n > 1 {
			duplicates = append(duplicates, fmt.Sprintf("%s x%d", id, n))
		}
	}
	sort.Strings(duplicates)
	t.Logf("%d deliveries of %d spooled webhooks, %d duplicated: %v", len(deliveries), requests, len(duplicates), duplicates)
	for _, id := range ids {
		if seen[id] == 0 {
			t.Errorf("spooled webhook %s was lost", id)
		}
	}
	if len(duplicates) > 0 {
		t.Errorf("duplicates %v: nothing was published before the kill, so none are expected", duplicates)
	}
	if len(seen) != requests {
		t.Errorf("%d distinct message ids arrived, want %d", len(seen), requests)
	}

	if err := second.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("stop ingest: %v", err)
	}
	if code := second.wait(t, 60*time.Second); code != 0 {
		t.Errorf("ingest exit status after SIGTERM = %d, want 0", code)
	}
}
