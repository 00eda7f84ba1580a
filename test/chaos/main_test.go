//go:build linux

package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// Bounds shared by the tests. They limit how long a broken component can
// stall the suite, and are not speed targets.
const (
	pollInterval = 100 * time.Millisecond
	buildTimeout = 5 * time.Minute
)

// errEnvironment marks a setup failure caused by the machine rather than by
// hookbus, such as a missing rabbitmq-server: the tests skip on it, except
// under CI=true.
var errEnvironment = errors.New("chaos: environment cannot run the suite")

// suite is what the tests share: one RabbitMQ node, the ingest and
// processor binaries, and the result lines of the tests that ran.
type suite struct {
	node *rabbitNode
	bin  string // directory of the ingest and processor binaries
	// spool reports whether ingest -h lists HOOKBUS_SPOOL_DIR; when it
	// does, every ingest runs with a spool directory.
	spool bool
	// soak makes the first four scenarios longer (HOOKBUS_CHAOS_SOAK=1).
	soak bool

	mu      sync.Mutex
	results []string
}

var (
	setupOnce sync.Once
	shared    *suite
	setupErr  error
	// tempDir holds the node's files and the binaries; TestMain removes it.
	tempDir string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if shared != nil {
		shared.printResults()
		if err := shared.node.stop(); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: stop the RabbitMQ node: %v\n", err)
			code = 1
		}
	}
	if tempDir != "" {
		if err := os.RemoveAll(tempDir); err != nil {
			fmt.Fprintf(os.Stderr, "chaos: remove %s: %v\n", tempDir, err)
		}
	}
	os.Exit(code)
}

// setup starts the suite's node and builds its binaries on the first call,
// and returns the suite. It skips the test unless HOOKBUS_CHAOS=1. When the machine
// cannot run the suite, it skips the test too, except under CI=true, where
// it fails it; any other setup failure fails the test.
func setup(t *testing.T) *suite {
	t.Helper()
	if os.Getenv("HOOKBUS_CHAOS") != "1" {
		t.Skip("chaos tests run only with HOOKBUS_CHAOS=1 (make test-chaos sets it) because they start a RabbitMQ node and take minutes")
	}
	setupOnce.Do(func() {
		shared, setupErr = newSuite()
	})
	if setupErr != nil {
		if errors.Is(setupErr, errEnvironment) && !ciRun() {
			t.Skipf("chaos suite cannot run here: %v", setupErr)
		}
		t.Fatalf("chaos suite setup: %v", setupErr)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	if !shared.node.running() {
		t.Fatalf("RabbitMQ node %s is gone; its log ends with:\n%s", shared.node.name, shared.node.logTail(40))
	}
	if err := shared.node.awaitAMQP(ctx); err != nil {
		t.Fatalf("RabbitMQ node %s does not accept connections, an earlier test may have left it stopped: %v", shared.node.name, err)
	}
	return shared
}

// newSuite builds the binaries and starts the node.
func newSuite() (*suite, error) {
	scripts, err := findScripts()
	if err != nil {
		return nil, err
	}
	tempDir, err = os.MkdirTemp("", "hookbus-chaos-")
	if err != nil {
		return nil, err
	}
	s := &suite{soak: os.Getenv("HOOKBUS_CHAOS_SOAK") == "1"}
	if s.bin, err = buildBinaries(filepath.Join(tempDir, "bin")); err != nil {
		return nil, err
	}
	help, err := exec.Command(filepath.Join(s.bin, "ingest"), "-h").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ingest -h: %w\n%s", err, help)
	}
	s.spool = strings.Contains(string(help), "HOOKBUS_SPOOL_DIR")

	start := time.Now()
	if s.node, err = startNode(scripts, filepath.Join(tempDir, "rabbitmq")); err != nil {
		return nil, fmt.Errorf("%w: start a RabbitMQ node with %s: %w", errEnvironment, scripts, err)
	}
	fmt.Printf("chaos: RabbitMQ node %s listens on 127.0.0.1:%d (started in %s from %s); ingest spool %s; race detector in the services %s\n",
		s.node.name, s.node.amqpPort, time.Since(start).Round(time.Millisecond), scripts, onOff(s.spool), onOff(raceEnabled && os.Getenv("HOOKBUS_CHAOS_BIN") == ""))
	return s, nil
}

// buildBinaries builds ingest and processor into dir, with the race
// detector when the tests run with it, and returns dir. When
// HOOKBUS_CHAOS_BIN is set, it returns that directory instead, which must
// contain both binaries.
func buildBinaries(dir string) (string, error) {
	if prebuilt := os.Getenv("HOOKBUS_CHAOS_BIN"); prebuilt != "" {
		for _, name := range []string{"ingest", "processor"} {
			if _, err := os.Stat(filepath.Join(prebuilt, name)); err != nil {
				return "", fmt.Errorf("HOOKBUS_CHAOS_BIN: %w", err)
			}
		}
		return prebuilt, nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	args := []string{"build", "-o", dir + string(filepath.Separator)}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/hookbus/hookbus/ingest/cmd/ingest", "github.com/hookbus/hookbus/processor/cmd/processor")
	build := exec.CommandContext(ctx, "go", args...)
	if output, err := build.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build: %w\n%s", err, output)
	}
	return dir, nil
}

// addResult records a test's result line for the summary that TestMain
// prints.
func (s *suite) addResult(line string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.results = append(s.results, line)
}

func (s *suite) printResults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.results) == 0 {
		return
	}
	fmt.Println("chaos results:")
	for _, line := range s.results {
		fmt.Println("  " + line)
	}
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}
