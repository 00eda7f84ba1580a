package service_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
	"github.com/hookbus/hookbus/processor/service"
)

// Environment variables of a child processor that the crash test starts from
// the test binary.
const (
	// childEnv set to "1" makes the test binary run a processor instead of
	// the tests.
	childEnv = "HOOKBUS_TEST_CHILD"
	// childSuccessFileEnv is the file to which the child appends the id of
	// each message its handler succeeded on, one per line.
	childSuccessFileEnv = "HOOKBUS_TEST_SUCCESS_FILE"
)

// childFailures is the number of calls for each message that the child's
// handler fails before it succeeds.
const childFailures = 2

// childCallDuration is how long each call of the child's handler takes, like
// a call to a downstream service. With childConcurrency, it makes the 900
// calls of the test's 300 messages take about 2 seconds, so that the kills
// land while messages are in flight.
const (
	childCallDuration = 20 * time.Millisecond
	childConcurrency  = 8
)

// childExitTimeout bounds the wait for a child to exit after a signal.
const childExitTimeout = 20 * time.Second

// init runs the child processor and exits when childEnv is set. It runs
// before TestMain, so the child process runs no test.
func init() {
	if os.Getenv(childEnv) != "1" {
		return
	}
	os.Exit(runChild())
}

// runChild runs a processor with the configuration in the HOOKBUS_*
// environment variables until SIGTERM, and returns the exit status. Its route
// testRoute fails the first childFailures calls for each message and then
// records the message id in the success file before it returns nil.
func runChild() int {
	var cfg service.Config
	if err := config.Problems(config.Load(&cfg), cfg.Validate()); err != nil {
		fmt.Fprintf(os.Stderr, "child processor: invalid configuration:\n%v\n", err)
		return 2
	}
	logger := cfg.NewLogger(os.Stderr)

	// With O_SYNC, a line is on disk before the handler returns and the
	// message is acked, so a kill cannot lose the record of an acked message.
	successes, err := os.OpenFile(os.Getenv(childSuccessFileEnv), os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_SYNC, 0o600)
	if err != nil {
		logger.Error("open success file failed", "error", err)
		return 1
	}
	defer successes.Close()

	route := consume.Route{
		Route: topology.Route{Name: testRoute, Bindings: []string{"#"}},
		Handler: consume.HandlerFunc(func(ctx context.Context, msg *contract.Message) error {
			work := time.NewTimer(childCallDuration)
			defer work.Stop()
			select {
			case <-work.C:
			case <-ctx.Done():
				return ctx.Err()
			}
			if failed := failedAttempts(msg); failed < childFailures {
				return fmt.Errorf("call %d fails on purpose", failed+1)
			}
			// One write call with O_APPEND, so lines of concurrent
			// handlers never interleave.
			if _, err := successes.WriteString(msg.ID + "\n"); err != nil {
				return fmt.Errorf("record success: %w", err)
			}
			return nil
		}),
	}
	svc, err := service.New(cfg, []consume.Route{route}, logger)
	if err != nil {
		logger.Error("processor not started", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	if err := svc.Run(ctx); err != nil {
		return 1
	}
	return 0
}

// failedAttempts returns the number of earlier calls for msg that failed,
// from the hookbus-attempts header that the consumer sets on a retried
// message (0 before the first failure).
func failedAttempts(msg *contract.Message) int {
	n, err := strconv.Atoi(msg.Meta[strings.TrimPrefix(consume.HeaderAttempts, contract.MetaPrefix)])
	if err != nil {
		return 0
	}
	return n
}

// child is a processor process started from the test binary.
type child struct {
	cmd    *exec.Cmd
	done   chan error // receives the result of cmd.Wait
	exited bool
	result error // the result of cmd.Wait, once exited
}

// startChild starts a child processor with the environment env, writing its
// log to logFile. A cleanup kills it if it still runs when the test ends.
func startChild(t *testing.T, env []string, logFile *os.File) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = env
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		t.Fatalf("start child processor: %v", err)
	}
	c := &child{cmd: cmd, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() { c.stop(t, syscall.SIGKILL) })
	return c
}

// waitOrExit waits for d and returns true, or returns false when the child
// exits first.
func (c *child) waitOrExit(d time.Duration) bool {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case err := <-c.done:
		c.exited, c.result = true, err
		return false
	}
}

// stop sends sig to the child unless it has exited, waits for it to exit
// and returns the result of cmd.Wait. A child that does not exit within
// childExitTimeout is killed.
func (c *child) stop(t *testing.T, sig syscall.Signal) error {
	t.Helper()
	if c.exited {
		return c.result
	}
	if err := c.cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("send %s to child %d: %v", sig, c.cmd.Process.Pid, err)
	}
	timer := time.NewTimer(childExitTimeout)
	defer timer.Stop()
	select {
	case c.result = <-c.done:
	case <-timer.C:
		t.Errorf("child %d did not exit within %s of %s; killing it", c.cmd.Process.Pid, childExitTimeout, sig)
		_ = c.cmd.Process.Kill()
		c.result = <-c.done
	}
	c.exited = true
	return c.result
}

// killedBy reports whether err is the result of cmd.Wait for a process that
// sig ended.
func killedBy(err error, sig syscall.Signal) bool {
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		return false
	}
	status, ok := exitErr.Sys().(syscall.WaitStatus)
	return ok && status.Signaled() && status.Signal() == sig
}

// readSuccesses returns how often each message id is in the success file.
func readSuccesses(t *testing.T, path string) map[string]int {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return map[string]int{}
	}
	if err != nil {
		t.Fatalf("read success file: %v", err)
	}
	counts := map[string]int{}
	for _, line := range strings.Split(string(data), "\n") {
		if line != "" {
			counts[line]++
		}
	}
	return counts
}

// drainParked takes every ready message from the parking lot and records
// its parking reason by message id.
func drainParked(t *testing.T, ch *amqp.Channel, names topology.Names, parked map[string]string) {
	t.Helper()
	for {
		d, ok, err := ch.Get(names.ParkedQueue(), true)
		if err != nil {
			t.Fatalf("get from %s: %v", names.ParkedQueue(), err)
		}
		if !ok {
			return
		}
		reason, _ := d.Headers[consume.HeaderParkedReason].(string)
		if reason == "" {
			reason = "dead-lettered by the broker"
		}
		parked[d.MessageId] = reason
	}
}

// readyMessages returns the number of ready messages in the route queue
// and the delay queues together.
func readyMessages(t *testing.T, ch *amqp.Channel, names topology.Names, schedule topology.RetrySchedule) int {
	t.Helper()
	n := rabbittest.MessageCount(t, ch, names.RouteQueue(testRoute))
	for _, ttl := range schedule.TTLs() {
		n += rabbittest.MessageCount(t, ch, names.DelayQueue(ttl))
	}
	return n
}

// logTail returns the last n lines of the file at path.
func logTail(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", filepath.Base(path), err)
	}
	lines := strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

// TestCrashDuringRetriesLosesNothing kills child processors with SIGKILL
// while they retry messages and checks that every message is still
// handled or parked afterwards. A kill may make a message handled twice,
// since delivery is at least once, and the test reports how often that
// happened.
func TestCrashDuringRetriesLosesNothing(t *testing.T) {
	const (
		messages = 300
		kills    = 4
		// accountTimeout bounds the wait for the last child to handle
		// or park every message.
		accountTimeout = 60 * time.Second
		// quietPolls is the number of polls in a row, pollInterval
		// apart, that must find the route and delay queues empty before
		// the last child is stopped. One poll can miss a message that a
		// handler holds at that moment.
		quietPolls   = 3
		pollInterval = 100 * time.Millisecond
	)
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, testRoute)
	schedule := topology.RetrySchedule{Delays: []time.Duration{100 * time.Millisecond, 200 * time.Millisecond}, Jitter: 0.2}
	rabbittest.DeleteDelays(t, url, names, schedule)
	ch := confirmChannel(t, url, names)
	if err := topology.DeclareRoute(ch, names, topology.Route{Name: testRoute, Bindings: []string{"#"}}); err != nil {
		t.Fatalf("declare route: %v", err)
	}

	dir := t.TempDir()
	successPath := filepath.Join(dir, "successes")
	logPath := filepath.Join(dir, "child.log")
	logFile, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatalf("open child log: %v", err)
	}
	t.Cleanup(func() {
		_ = logFile.Close()
		if t.Failed() {
			t.Logf("last lines of the child log:\n%s", logTail(logPath, 60))
		}
	})
	delays := make([]string, len(schedule.Delays))
	for i, d := range schedule.Delays {
		delays[i] = d.String()
	}
	env := append(os.Environ(),
		childEnv+"=1",
		childSuccessFileEnv+"="+successPath,
		config.Prefix+"_AMQP_URL="+url,
		config.Prefix+"_NAMESPACE="+names.Namespace(),
		config.Prefix+"_PROCESSOR_ADDR=127.0.0.1:0",
		config.Prefix+"_LOG_LEVEL=info",
		config.Prefix+"_LOG_FORMAT=text",
		config.Prefix+"_PREFETCH=200",
		config.Prefix+"_CONCURRENCY="+strconv.Itoa(childConcurrency),
		config.Prefix+"_HANDLER_TIMEOUT=5s",
		config.Prefix+"_SHUTDOWN_GRACE=5s",
		config.Prefix+"_RETRY_DELAYS="+strings.Join(delays, ","),
		config.Prefix+fmt.Sprintf("_RETRY_JITTER=%g", schedule.Jitter),
		config.Prefix+"_MAX_ATTEMPTS=5",
	)

	msgs := make([]*contract.Message, messages)
	sent := map[string]bool{}
	for i := range msgs {
		msgs[i] = newMessage()
		msgs[i].ID = fmt.Sprintf("crash-%03d-%s", i, randomID())
		sent[msgs[i].ID] = true
	}
	publishAll(t, ch, names, msgs)

	seed := time.Now().UnixNano()
	t.Logf("kill moments from seed %d", seed)
	rng := rand.New(rand.NewPCG(uint64(seed), 0))
	for i := range kills {
		c := startChild(t, env, logFile)
		delay := 200*time.Millisecond + time.Duration(rng.Int64N(int64(600*time.Millisecond)))
		if !c.waitOrExit(delay) {
			t.Fatalf("child %d exited before it was killed: %v", i+1, c.result)
		}
		if err := c.stop(t, syscall.SIGKILL); !killedBy(err, syscall.SIGKILL) {
			t.Fatalf("child %d: wait = %v, want killed by SIGKILL", i+1, err)
		}
		t.Logf("killed child %d after %s; %d successes recorded", i+1, delay.Round(time.Millisecond), len(readSuccesses(t, successPath)))
	}

	last := startChild(t, env, logFile)
	parked := map[string]string{}
	deadline := time.Now().Add(accountTimeout)
	missing := messages
	for quiet := 0; missing > 0 || quiet < quietPolls; {
		if time.Now().After(deadline) {
			t.Fatalf("after %s, %d of %d messages are neither handled nor parked, and %d polls in a row found the queues empty", accountTimeout, missing, messages, quiet)
		}
		if !last.waitOrExit(pollInterval) {
			t.Fatalf("last child exited before every message was handled: %v", last.result)
		}
		drainParked(t, ch, names, parked)
		successes := readSuccesses(t, successPath)
		missing = 0
		for id := range sent {
			if successes[id] == 0 && parked[id] == "" {
				missing++
			}
		}
		if missing == 0 && readyMessages(t, ch, names, schedule) == 0 {
			quiet++
		} else {
			quiet = 0
		}
	}
	if err := last.stop(t, syscall.SIGTERM); err != nil {
		t.Errorf("last child after SIGTERM: wait = %v, want exit status 0", err)
	}

	drainParked(t, ch, names, parked)
	successes := readSuccesses(t, successPath)
	lines, duplicates, handledAndParked := 0, 0, 0
	for id, n := range successes {
		lines += n
		if !sent[id] {
			t.Errorf("success file names %q, which was never sent", id)
		}
		if n > 1 {
			duplicates++
		}
		if parked[id] != "" {
			handledAndParked++
		}
	}
	for id, reason := range parked {
		if !sent[id] {
			t.Errorf("parking lot holds %q, which was never sent", id)
		}
		t.Logf("message %s parked: %s", id, reason)
	}
	for id := range sent {
		if successes[id] == 0 && parked[id] == "" {
			t.Errorf("message %s lost: neither handled nor parked", id)
		}
	}
	t.Logf("%d messages, %d kills: %d handled (%d success lines), %d handled more than once, %d parked, %d both handled and parked",
		messages, kills, len(successes), lines, duplicates, len(parked), handledAndParked)
	requireQueueEmpty(t, ch, names.RouteQueue(testRoute))
	requireDelaysEmpty(t, ch, names, schedule)
}
