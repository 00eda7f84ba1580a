package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hookbus/hookbus/pkg/rabbittest"
)

// buildTimeout bounds the go build of both commands.
const buildTimeout = 5 * time.Minute

func TestBinariesDeliverWebhook(t *testing.T) {
	amqpURL := rabbittest.URL(t)
	names := rabbittest.Namespace(t, amqpURL, routeName)
	bin := buildCommands(t)

	ingestAddr := freeAddr(t)
	processorAddr := freeAddr(t)
	env := append(environWithout("HOOKBUS_"),
		"HOOKBUS_AMQP_URL="+amqpURL,
		"HOOKBUS_NAMESPACE="+names.Namespace(),
		"HOOKBUS_LOG_FORMAT=json",
		"HOOKBUS_LOG_LEVEL=info",
		"HOOKBUS_INGEST_ADDR="+ingestAddr,
		"HOOKBUS_PROCESSOR_ADDR="+processorAddr,
	)
	processor := startCommand(t, "processor", filepath.Join(bin, "processor"), env)
	ingest := startCommand(t, "ingest", filepath.Join(bin, "ingest"), env)
	client := newHTTPClient(t)
	waitReadyz(t, client, processor, "http://"+processorAddr+"/readyz")
	waitReadyz(t, client, ingest, "http://"+ingestAddr+"/readyz")

	// The same request as: curl -H 'X-GitHub-Event: push'
	// -H 'Content-Type: application/json' --data-binary @push.json
	// http://<ingest>/webhooks/github
	body := readFixture(t, "github/push.json")
	header := newHeader(
		"X-GitHub-Event", "push",
		"Content-Type", "application/json",
	)
	accepted := mustPost(t, client, "http://"+ingestAddr, "github", header, body)
	if accepted.ID == "" {
		t.Fatal("202 response has an empty id")
	}

	entry := processor.output.waitForEntry(t, `"event received" with message_id `+accepted.ID, func(entry map[string]any) bool {
		return entry["msg"] == "event received" && entry["message_id"] == accepted.ID
	})
	if entry["source"] != "github" {
		t.Errorf("logged source = %v, want github", entry["source"])
	}
	if entry["event_type"] != "push" {
		t.Errorf("logged event_type = %v, want push", entry["event_type"])
	}
	if size, _ := entry["size_bytes"].(float64); int(size) != len(body) {
		t.Errorf("logged size_bytes = %v, want %d", entry["size_bytes"], len(body))
	}

	ingest.signal(t, syscall.SIGTERM)
	processor.signal(t, syscall.SIGTERM)
	for _, cmd := range []*command{ingest, processor} {
		if code := cmd.wait(t); code != 0 {
			t.Errorf("%s exited with status %d after SIGTERM, want 0", cmd.name, code)
		}
	}
}

// buildCommands builds the ingest and processor commands into a temporary
// directory and returns that directory.
func buildCommands(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ctx, cancel := context.WithTimeout(t.Context(), buildTimeout)
	defer cancel()
	build := exec.CommandContext(ctx, "go", "build", "-o", dir+string(filepath.Separator),
		"github.com/hookbus/hookbus/ingest/cmd/ingest",
		"github.com/hookbus/hookbus/processor/cmd/processor",
	)
	if output, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, output)
	}
	return dir
}

// freeAddr returns a loopback address with a port that was free a moment
// ago. Another process may take the port before the command listens on it.
// Then the command fails to start, and the test reports its log.
func freeAddr(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	addr := listener.Addr().String()
	if err := listener.Close(); err != nil {
		t.Fatalf("find a free port: %v", err)
	}
	return addr
}

// environWithout returns the environment of the test process without the
// variables whose names start with prefix, so that the commands see only
// the configuration the test sets.
func environWithout(prefix string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, prefix) {
			env = append(env, kv)
		}
	}
	return env
}

// command is a program started by a test, with its standard error collected
// line by line.
type command struct {
	name    string
	cmd     *exec.Cmd
	output  *lineLog
	exited  chan struct{} // closed when the output reached its end and Wait returned
	waitErr error         // Wait's result, set before exited is closed
}

// startCommand starts the program at path with env. A goroutine reads its
// standard error into output and then waits for the process. A cleanup
// kills the process if it still runs, and logs its output when the test
// failed.
func startCommand(t *testing.T, name, path string, env []string) *command {
	t.Helper()
	cmd := exec.Command(path)
	cmd.Env = env
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatalf("%s: stderr pipe: %v", name, err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	c := &command{name: name, cmd: cmd, output: newLineLog(), exited: make(chan struct{})}
	go func() {
		defer close(c.exited)
		c.output.readFrom(stderr)
		c.waitErr = cmd.Wait()
	}()
	t.Cleanup(func() {
		select {
		case <-c.exited:
		default:
			_ = cmd.Process.Kill()
			<-c.exited
		}
		if t.Failed() {
			for _, line := range c.output.lines(0) {
				t.Logf("%s: %s", name, line)
			}
		}
	})
	return c
}

// running reports whether the process has not exited yet.
func (c *command) running() bool {
	select {
	case <-c.exited:
		return false
	default:
		return true
	}
}

// signal sends sig to the process.
func (c *command) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := c.cmd.Process.Signal(sig); err != nil {
		t.Errorf("send %v to %s: %v", sig, c.name, err)
	}
}

// wait waits up to stopTimeout for the process to exit and returns its exit
// status. After the timeout it kills the process and fails the test.
func (c *command) wait(t *testing.T) int {
	t.Helper()
	select {
	case <-c.exited:
	case <-time.After(stopTimeout):
		_ = c.cmd.Process.Kill()
		<-c.exited
		t.Fatalf("%s did not exit within %s", c.name, stopTimeout)
	}
	return c.cmd.ProcessState.ExitCode()
}

// waitReadyz polls url until it responds with status 200. It fails the test
// when the process exits first or when startTimeout passes.
func waitReadyz(t *testing.T, client *http.Client, c *command, url string) {
	t.Helper()
	waitUntil(t, startTimeout, c.name+" /readyz to respond 200", func() bool {
		if !c.running() {
			t.Fatalf("%s exited before it was ready: %v", c.name, c.waitErr)
		}
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

// lineLog collects the lines of a process's output and signals each new
// line to a waiting test.
type lineLog struct {
	mu      sync.Mutex
	entries []string
	added   chan struct{} // receives a value after entries grew; capacity 1
}

func newLineLog() *lineLog {
	return &lineLog{added: make(chan struct{}, 1)}
}

// readFrom appends every line of r until r ends. A line longer than the
// scanner's 1 MiB limit ends the scan, and the rest of r is discarded so
// that the process never blocks on a full pipe.
func (l *lineLog) readFrom(r io.Reader) {
	scanner := bufio.NewScanner(r)
	scanner.Buffer(make([]byte, 64<<10), 1<<20)
	for scanner.Scan() {
		l.mu.Lock()
		l.entries = append(l.entries, scanner.Text())
		l.mu.Unlock()
		select {
		case l.added <- struct{}{}:
		default:
		}
	}
	_, _ = io.Copy(io.Discard, r)
}

// lines returns the lines from index from on.
func (l *lineLog) lines(from int) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.entries[min(from, len(l.entries)):]...)
}

// waitForEntry waits up to arrivalTimeout for a line that is a JSON object
// for which match returns true, and returns that object.
func (l *lineLog) waitForEntry(t *testing.T, what string, match func(entry map[string]any) bool) map[string]any {
	t.Helper()
	timer := time.NewTimer(arrivalTimeout)
	defer timer.Stop()
	checked := 0
	for {
		for _, line := range l.lines(checked) {
			checked++
			var entry map[string]any
			if json.Unmarshal([]byte(line), &entry) == nil && match(entry) {
				return entry
			}
		}
		select {
		case <-l.added:
		case <-timer.C:
			t.Fatalf("timed out after %s waiting for the log line %s", arrivalTimeout, what)
		}
	}
}
