package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
	"github.com/hookbus/hookbus/processor/handlers"
)

// runMainVariable makes the test binary run the processor command instead
// of the tests, so that the tests can start the command as a process.
const runMainVariable = "HOOKBUS_TEST_RUN_PROCESSOR_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(runMainVariable) == "1" {
		main()
	}
	os.Exit(m.Run())
}

// waitTimeout bounds every wait for the process or the broker. It is a
// deadline for failing tests, not an expected duration.
const waitTimeout = 20 * time.Second

// processorProcess is the processor command running as a child process,
// with its stderr lines in a channel.
type processorProcess struct {
	cmd    *exec.Cmd
	lines  chan string   // stderr lines; closed at end of output
	output []string      // lines read by nextLine so far
	exited chan struct{} // closed after cmd.Wait returned
	err    error         // cmd.Wait's result, set before exited closes
}

// startProcessor starts the command with the broker URL and namespace. The
// process is killed, if it still runs, when the test ends.
func startProcessor(t *testing.T, url string, names topology.Names) *processorProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(),
		runMainVariable+"=1",
		"HOOKBUS_AMQP_URL="+url,
		"HOOKBUS_NAMESPACE="+names.Namespace(),
		"HOOKBUS_PROCESSOR_ADDR=127.0.0.1:0",
		"HOOKBUS_LOG_FORMAT=json",
		"HOOKBUS_LOG_LEVEL=info",
		"HOOKBUS_SHUTDOWN_GRACE=5s",
	)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start processor: %v", err)
	}

	p := &processorProcess{cmd: cmd, lines: make(chan string, 1000), exited: make(chan struct{})}
	go func() {
		// The pipe must be read to its end before cmd.Wait.
		scanner := bufio.NewScanner(stderr)
		for scanner.Scan() {
			p.lines <- scanner.Text()
		}
		close(p.lines)
		p.err = cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill() // fails harmlessly when the process has exited
		<-p.exited
		if t.Failed() {
			t.Logf("processor stderr:\n%s", strings.Join(p.output, "\n"))
		}
	})
	return p
}

// nextLine returns the first stderr line that contains every string of want,
// failing the test when the output ends or waitTimeout passes first.
func (p *processorProcess) nextLine(t *testing.T, want ...string) string {
	t.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case line, ok := <-p.lines:
			if !ok {
				t.Fatalf("processor output ended without a line containing %q", want)
			}
			p.output = append(p.output, line)
			if containsAll(line, want) {
				return line
			}
		case <-deadline:
			t.Fatalf("no processor output line containing %q within %s", want, waitTimeout)
		}
	}
}

func containsAll(s string, parts []string) bool {
	for _, part := range parts {
		if !strings.Contains(s, part) {
			return false
		}
	}
	return true
}

// wait returns the exit status of the process once it has exited.
func (p *processorProcess) wait(t *testing.T) int {
	t.Helper()
	// Read the rest of the output, so that the reader can reach cmd.Wait.
	for line := range p.lines {
		p.output = append(p.output, line)
	}
	select {
	case <-p.exited:
	case <-time.After(waitTimeout):
		t.Fatalf("processor did not exit within %s", waitTimeout)
	}
	var exitErr *exec.ExitError
	if errors.As(p.err, &exitErr) {
		return exitErr.ExitCode()
	}
	if p.err != nil {
		t.Fatalf("wait for processor: %v", p.err)
	}
	return 0
}

func TestProcessLogsEventAndStopsOnSIGTERM(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, handlers.DefaultRouteName)
	p := startProcessor(t, url, names)

	var started struct {
		HTTPAddr string `json:"http_addr"`
	}
	line := p.nextLine(t, `"msg":"processor starting"`)
	if err := json.Unmarshal([]byte(line), &started); err != nil || started.HTTPAddr == "" {
		t.Fatalf("start line %s has no http_addr (%v)", line, err)
	}
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(waitTimeout)
	for {
		resp, err := client.Get("http://" + started.HTTPAddr + "/readyz")
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz did not return 200 within %s (last error %v)", waitTimeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}

	ch := rabbittest.Channel(t, url)
	msg := &contract.Message{
		ID:        "process-test-1",
		Source:    "github",
		EventType: "push",
		Body:      []byte(`{"ref":"refs/heads/main","secret":"body-must-not-be-logged"}`),
	}
	publishing, err := msg.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if err := ch.PublishWithContext(context.Background(), names.Exchange(), msg.RoutingKey(), false, false, publishing); err != nil {
		t.Fatalf("publish: %v", err)
	}
	event := p.nextLine(t, `"msg":"event received"`, `"message_id":"process-test-1"`)

	for _, want := range []string{`"source":"github"`, `"event_type":"push"`, `"routing_key":"github.push"`, `"size_bytes":` + strconv.Itoa(len(msg.Body))} {
		if !strings.Contains(event, want) {
			t.Errorf("event line %s does not contain %s", event, want)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatalf("send SIGTERM: %v", err)
	}
	p.nextLine(t, `"msg":"processor stopped"`)
	if status := p.wait(t); status != exitOK {
		t.Errorf("exit status after SIGTERM = %d, want %d", status, exitOK)
	}
	for _, line := range p.output {
		if strings.Contains(line, "body-must-not-be-logged") {
			t.Errorf("log line contains the body: %s", line)
		}
	}
}

func TestProcessExitsOnInequivalentQueue(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, handlers.DefaultRouteName)
	queue := names.RouteQueue(handlers.DefaultRouteName)
	ch := rabbittest.Channel(t, url)
	if _, err := ch.QueueDeclare(queue, true, false, false, false, nil); err != nil {
		t.Fatalf("declare classic queue %s: %v", queue, err)
	}
	p := startProcessor(t, url, names)

	last := p.nextLine(t, "processor: service: broker rejected the topology")
	status := p.wait(t)

	if status != exitFailed {
		t.Errorf("exit status = %d, want %d", status, exitFailed)
	}
	if !strings.Contains(last, queue) {
		t.Errorf("message does not name queue %s: %s", queue, last)
	}
	if !strings.Contains(last, "inequivalent arg") {
		t.Errorf("message does not give the broker's reason: %s", last)
	}
}
