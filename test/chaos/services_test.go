//go:build linux

package chaos

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
	"github.com/hookbus/hookbus/processor/handlers"
)

// Settings of the services under test.
const (
	// shutdownGrace is HOOKBUS_SHUTDOWN_GRACE of both services.
	shutdownGrace = 10 * time.Second
	// publishTimeout is ingest's HOOKBUS_PUBLISH_TIMEOUT.
	publishTimeout = 3 * time.Second
	// readyTimeout bounds the wait for a started service's /readyz.
	readyTimeout = 60 * time.Second
	// exitTimeout bounds the wait for a signalled process to exit: its
	// grace period and time to close its connections.
	exitTimeout = shutdownGrace + 10*time.Second
	// logTailLines is how many of a process's last log lines a failed
	// test prints.
	logTailLines = 150
	// githubSecret signs the test webhooks.
	githubSecret = "chaos-test-secret"
)

// routeName is the processor's built-in route, which binds "#".
const routeName = handlers.DefaultRouteName

// scenario is one test's pipeline: a namespace on the suite's node, the
// ingest and processor processes it started, and the message ids that the
// processors logged.
type scenario struct {
	t          *testing.T
	suite      *suite
	names      topology.Names
	ingestAddr string // the same for every ingest, so the load follows a restart
	spoolDir   string // empty when ingest has no spool
	processed  *idCounter
	http       *http.Client

	mu          sync.Mutex
	ingests     []*process
	processors  []*process
	restoresApp bool // a cleanup starts the broker application if needed
}

// newScenario creates a namespace on the suite's node and a scenario
// without processes.
func newScenario(t *testing.T, s *suite) *scenario {
	t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		t.Fatal(err)
	}
	sc := &scenario{
		t:          t,
		suite:      s,
		names:      rabbittest.Namespace(t, s.node.url(), routeName),
		ingestAddr: "127.0.0.1:" + strconv.Itoa(ports[0]),
		processed:  newIDCounter(),
		http:       &http.Client{Timeout: 5 * time.Second},
	}
	if s.spool {
		sc.spoolDir = t.TempDir()
	}
	t.Cleanup(sc.http.CloseIdleConnections)
	return sc
}

// baseEnv returns the environment shared by both services.
func (sc *scenario) baseEnv() []string {
	return append(environWithout("HOOKBUS_"),
		"HOOKBUS_AMQP_URL="+sc.suite.node.url(),
		"HOOKBUS_NAMESPACE="+sc.names.Namespace(),
		"HOOKBUS_LOG_FORMAT=json",
		"HOOKBUS_LOG_LEVEL=info",
		"HOOKBUS_SHUTDOWN_GRACE="+shutdownGrace.String(),
	)
}

// startIngest starts an ingest on the scenario's address and spool
// directory and waits until its /readyz responds with 200.
func (sc *scenario) startIngest() *process {
	sc.t.Helper()
	env := append(sc.baseEnv(),
		"HOOKBUS_INGEST_ADDR="+sc.ingestAddr,
		"HOOKBUS_SOURCES=github:github",
		"HOOKBUS_SOURCE_GITHUB_SECRETS="+githubSecret,
		"HOOKBUS_PUBLISH_TIMEOUT="+publishTimeout.String(),
	)
	if sc.spoolDir != "" {
		env = append(env, "HOOKBUS_SPOOL_DIR="+sc.spoolDir)
	}
	sc.mu.Lock()
	name := fmt.Sprintf("ingest-%d", len(sc.ingests)+1)
	sc.mu.Unlock()
	p := sc.startProcess(name, filepath.Join(sc.suite.bin, "ingest"), env, nil)
	sc.mu.Lock()
	sc.ingests = append(sc.ingests, p)
	sc.mu.Unlock()
	sc.waitReady(p, "http://"+sc.ingestAddr+"/readyz")
	return p
}

// startProcessor starts a processor with the default route and waits until
// its /readyz responds with 200. Every "event received" line it logs counts in
// sc.processed.
func (sc *scenario) startProcessor() *process {
	sc.t.Helper()
	ports, err := freePorts(1)
	if err != nil {
		sc.t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(ports[0])
	env := append(sc.baseEnv(), "HOOKBUS_PROCESSOR_ADDR="+addr)
	sc.mu.Lock()
	name := fmt.Sprintf("processor-%d", len(sc.processors)+1)
	sc.mu.Unlock()
	p := sc.startProcess(name, filepath.Join(sc.suite.bin, "processor"), env, sc.recordProcessed)
	sc.mu.Lock()
	sc.processors = append(sc.processors, p)
	sc.mu.Unlock()
	sc.waitReady(p, "http://"+addr+"/readyz")
	return p
}

// recordProcessed counts the message id of an "event received" line.
func (sc *scenario) recordProcessed(line string) {
	if !strings.Contains(line, `"event received"`) {
		return
	}
	var entry struct {
		Msg       string `json:"msg"`
		MessageID string `json:"message_id"`
	}
	if json.Unmarshal([]byte(line), &entry) == nil && entry.Msg == "event received" && entry.MessageID != "" {
		sc.processed.add(entry.MessageID)
	}
}

// waitReady polls url until it responds with 200. It fails the test when the
// process exits first or readyTimeout passes.
func (sc *scenario) waitReady(p *process, url string) {
	sc.t.Helper()
	deadline := time.Now().Add(readyTimeout)
	for {
		if !p.running() {
			sc.t.Fatalf("%s exited before it was ready: %v", p.name, p.waitErr)
		}
		resp, err := sc.http.Get(url)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			sc.t.Fatalf("%s: %s did not answer 200 within %s (last error: %v)", p.name, url, readyTimeout, err)
		}
		time.Sleep(pollInterval) // polling interval of a condition with a deadline
	}
}

// running returns the processes of the list that have not exited.
func running(list []*process) []*process {
	var alive []*process
	for _, p := range list {
		if p.running() {
			alive = append(alive, p)
		}
	}
	return alive
}

// runningIngests returns the ingests that have not exited.
func (sc *scenario) runningIngests() []*process {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return running(sc.ingests)
}

// runningProcessors returns the processors that have not exited.
func (sc *scenario) runningProcessors() []*process {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	return running(sc.processors)
}

// stopAll sends SIGTERM to the running ingests, then to the running
// processors, and fails the test when one does not exit with status 0
// within exitTimeout. Ingest stops first, so that the processors still
// consume what it published during its shutdown.
func (sc *scenario) stopAll() {
	sc.t.Helper()
	for _, group := range [][]*process{sc.runningIngests(), sc.runningProcessors()} {
		for _, p := range group {
			p.signal(sc.t, syscall.SIGTERM)
		}
		for _, p := range group {
			if code := p.wait(sc.t, exitTimeout); code != 0 {
				sc.t.Errorf("%s exited with status %d after SIGTERM, want 0", p.name, code)
			}
		}
	}
}

// spoolMessages returns the hookbus_ingest_spool_messages gauge of the
// running ingest, and false when no ingest runs or it exports no such
// gauge (ingest without a spool).
func (sc *scenario) spoolMessages() (int, bool) {
	resp, err := sc.http.Get("http://" + sc.ingestAddr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	scanner := bufio.NewScanner(resp.Body)
	for scanner.Scan() {
		value, ok := strings.CutPrefix(scanner.Text(), "hookbus_ingest_spool_messages ")
		if !ok {
			continue
		}
		n, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return 0, false
		}
		return int(n), true
	}
	return 0, false
}

// startProcess starts the binary at path with env. A goroutine reads its
// standard error, passes each line to onLine when it is set, and keeps the
// last lines. Then the goroutine waits for the process. A cleanup kills the
// process if it still runs, and prints its last log lines when the test
// failed.
func (sc *scenario) startProcess(name, path string, env []string, onLine func(string)) *process {
	sc.t.Helper()
	cmd := exec.Command(path)
	cmd.Env = env
	// A test process that dies without its cleanups takes the service
	// with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		sc.t.Fatalf("%s: stderr pipe: %v", name, err)
	}
	if err := cmd.Start(); err != nil {
		sc.t.Fatalf("start %s: %v", name, err)
	}

	p := &process{name: name, cmd: cmd, log: newLineRing(logTailLines), exited: make(chan struct{})}
	go func() {
		defer close(p.exited)
		p.log.readFrom(stderr, onLine)
		p.waitErr = cmd.Wait()
	}()

	t := sc.t
	t.Cleanup(func() {
		if p.running() {
			_ = cmd.Process.Kill()
			<-p.exited
		}
		if races := p.log.races(); races > 0 {
			t.Errorf("%s reported %d data races", name, races)
		}
		if t.Failed() {
			for _, line := range p.log.lines() {
				t.Logf("%s: %s", name, line)
			}
		}
	})
	return p
}

// process is an ingest or processor started by a test.
type process struct {
	name    string
	cmd     *exec.Cmd
	log     *lineRing
	exited  chan struct{} // closed when stderr reached its end and Wait returned
	waitErr error         // Wait's result, set before exited is closed
}

// running reports whether the process has not exited yet.
func (p *process) running() bool {
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// signal sends sig to the process.
func (p *process) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Errorf("send %v to %s: %v", sig, p.name, err)
	}
}

// wait waits up to timeout for the process to exit and returns its exit
// status, -1 for a process ended by a signal. After the timeout it kills
// the process and fails the test.
func (p *process) wait(t *testing.T, timeout time.Duration) int {
	t.Helper()
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
		t.Errorf("%s did not exit within %s", p.name, timeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

// kill ends the process with SIGKILL and waits for it.
func (p *process) kill(t *testing.T) {
	t.Helper()
	p.signal(t, syscall.SIGKILL)
	<-p.exited
}

// raceWarning starts the report of a binary built with the race detector.
const raceWarning = "WARNING: DATA RACE"

// lineRing keeps the last lines of a process's output and counts its race
// reports.
type lineRing struct {
	mu        sync.Mutex
	max       int
	ring      []string
	total     int
	raceCount int
}

func newLineRing(max int) *lineRing {
	return &lineRing{max: max}
}

// readFrom reads r line by line until it ends, passes each line to onLine
// when it is set, and keeps the last lines. A line longer than 1 MiB ends
// the scan, and the rest of r is discarded so that the process never blocks
// on a full pipe.
func (l *lineRing) readFrom(r io.Reader, onLine func(string)) {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if onLine != nil {
			onLine(line)
		}
		l.mu.Lock()
		l.total++
		if strings.HasPrefix(line, raceWarning) {
			l.raceCount++
		}
		l.ring = append(l.ring, line)
		if len(l.ring) > l.max {
			l.ring = l.ring[1:]
		}
		l.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}

// lines returns the kept lines, preceded by a note when earlier lines were
// dropped.
func (l *lineRing) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]string, 0, len(l.ring)+1)
	if dropped := l.total - len(l.ring); dropped > 0 {
		out = append(out, fmt.Sprintf("(%d earlier lines not kept)", dropped))
	}
	return append(out, l.ring...)
}

// races returns the number of race reports read so far.
func (l *lineRing) races() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.raceCount
}

// idCounter counts how often each message id was seen.
type idCounter struct {
	mu     sync.Mutex
	counts map[string]int
	total  int
}

func newIDCounter() *idCounter {
	return &idCounter{counts: map[string]int{}}
}

func (c *idCounter) add(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[id]++
	c.total++
}

// snapshot returns a copy of the counts and the number of ids added,
// duplicates included.
func (c *idCounter) snapshot() (map[string]int, int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	counts := make(map[string]int, len(c.counts))
	for id, n := range c.counts {
		counts[id] = n
	}
	return counts, c.total
}

// added returns the number of ids added, duplicates included.
func (c *idCounter) added() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.total
}

// missingFrom returns how many of ids were never added.
func (c *idCounter) missingFrom(ids []string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	missing := 0
	for _, id := range ids {
		if c.counts[id] == 0 {
			missing++
		}
	}
	return missing
}

// hold waits for d, the length of a disturbance or of a period of steady
// load. It is not a wait for an event.
func hold(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
