package main

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/hookbus/hookbus/ingest/service"
	"github.com/hookbus/hookbus/pkg/config"
)

// testPassword is the broker password the tests put in HOOKBUS_AMQP_URL.
// It must never appear in the program's output.
const testPassword = "pw-7c1d9e40-never-printed"

// buildBinary compiles this command into a temporary folder and returns the
// path of the executable.
func buildBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("go tool not found in PATH: %v", err)
	}
	binary := filepath.Join(t.TempDir(), "ingest")
	build := exec.Command(goTool, "build", "-o", binary, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return binary
}

// commandEnv returns the environment of this process without any HOOKBUS_
// variable, followed by the given assignments.
func commandEnv(assignments ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, config.Prefix+"_") {
			env = append(env, kv)
		}
	}
	return append(env, assignments...)
}

// configVariables returns the names of the environment variables that
// service.Config reads, including those of its embedded structs.
func configVariables(t reflect.Type) []string {
	var names []string
	for i := range t.NumField() {
		field := t.Field(i)
		if field.Anonymous && field.Type.Kind() == reflect.Struct {
			names = append(names, configVariables(field.Type)...)
			continue
		}
		if key := field.Tag.Get("envconfig"); key != "" {
			names = append(names, config.Prefix+"_"+key)
		}
	}
	return names
}

// exitCode returns the exit status of a finished command.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	if err == nil {
		return 0
	}
	var exitErr *exec.ExitError
	if !errors.As(err, &exitErr) {
		t.Fatalf("run ingest: %v", err)
	}
	return exitErr.ExitCode()
}

// closedAddr returns a loopback address on which nothing listens.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil {
		t.Fatalf("close listener: %v", err)
	}
	return addr
}

func TestBinary(t *testing.T) {
	binary := buildBinary(t)
	amqpURL := "amqp://hookbus:" + testPassword + "@" + closedAddr(t) + "/"

	t.Run("help lists every variable", func(t *testing.T) {
		variables := configVariables(reflect.TypeFor[service.Config]())
		if len(variables) == 0 {
			t.Fatal("found no envconfig variables in service.Config")
		}
		for _, arg := range []string{"-h", "--help"} {
			cmd := exec.Command(binary, arg)
			cmd.Env = commandEnv(config.Prefix + "_AMQP_URL=" + amqpURL)
			var stdout, stderr bytes.Buffer
			cmd.Stdout, cmd.Stderr = &stdout, &stderr

			code := exitCode(t, cmd.Run())

			if code != 0 {
				t.Errorf("ingest %s exit status = %d, want 0; stderr: %s", arg, code, stderr.String())
			}
			for _, variable := range variables {
				if !strings.Contains(stdout.String(), variable) {
					t.Errorf("ingest %s does not list %s", arg, variable)
				}
			}
			if strings.Contains(stdout.String()+stderr.String(), testPassword) {
				t.Errorf("ingest %s prints the password from %s_AMQP_URL", arg, config.Prefix)
			}
		}
	})

	t.Run("unknown argument", func(t *testing.T) {
		cmd := exec.Command(binary, "--max-body-bytes=10")
		cmd.Env = commandEnv()
		var stderr bytes.Buffer
		cmd.Stderr = &stderr

		code := exitCode(t, cmd.Run())

		if code != 2 {
			t.Errorf("exit status = %d, want 2", code)
		}
		if !strings.Contains(stderr.String(), `"--max-body-bytes=10"`) {
			t.Errorf("stderr does not name the argument: %s", stderr.String())
		}
	})

	t.Run("invalid config names every variable", func(t *testing.T) {
		cmd := exec.Command(binary)
		cmd.Env = commandEnv(
			config.Prefix+"_MAX_BODY_BYTES=abc",
			config.Prefix+"_NAMESPACE=a b",
			config.Prefix+"_AMQP_URL="+amqpURL,
		)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr

		code := exitCode(t, cmd.Run())

		if code != 2 {
			t.Errorf("exit status = %d, want 2; stderr: %s", code, stderr.String())
		}
		for _, variable := range []string{config.Prefix + "_MAX_BODY_BYTES", config.Prefix + "_NAMESPACE"} {
			if !strings.Contains(stderr.String(), variable) {
				t.Errorf("stderr does not name %s: %s", variable, stderr.String())
			}
		}
		if strings.Contains(stdout.String()+stderr.String(), testPassword) {
			t.Errorf("output contains the password: %s", stderr.String())
		}
	})

	t.Run("logs hide the broker password", func(t *testing.T) {
		cmd := exec.Command(binary)
		cmd.Env = commandEnv(
			config.Prefix+"_AMQP_URL="+amqpURL,
			config.Prefix+"_INGEST_ADDR=127.0.0.1:0",
			config.Prefix+"_NAMESPACE=test-cmd-ingest",
		)
		var stdout bytes.Buffer
		cmd.Stdout = &stdout
		stderrPipe, err := cmd.StderrPipe()
		if err != nil {
			t.Fatalf("stderr pipe: %v", err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start ingest: %v", err)
		}
		logs, sawFailure, readDone := scanLog(stderrPipe, `"broker connection failed"`)
		var waitOnce sync.Once
		var waitErr error
		wait := func() error {
			waitOnce.Do(func() {
				<-readDone
				waitErr = cmd.Wait()
			})
			return waitErr
		}
		t.Cleanup(func() {
			_ = cmd.Process.Kill()
			_ = wait()
		})

		select {
		case <-sawFailure:
		case <-time.After(30 * time.Second):
			t.Fatalf("no broker connection failure logged within 30s; log:\n%s", logs.String())
		}
		if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatalf("send SIGTERM: %v", err)
		}
		code := exitCode(t, wait())

		if code != 0 {
			t.Errorf("exit status after SIGTERM = %d, want 0; log:\n%s", code, logs.String())
		}
		output := stdout.String() + logs.String()
		if strings.Contains(output, testPassword) {
			t.Errorf("output contains the broker password:\n%s", output)
		}
		if !strings.Contains(logs.String(), "hookbus:xxxxx@") {
			t.Errorf("log does not show the redacted broker URL:\n%s", logs.String())
		}
		if !strings.Contains(logs.String(), `"ingest stopped"`) {
			t.Errorf("log lacks the stop message:\n%s", logs.String())
		}
	})
}

// lockedBuffer is a bytes.Buffer that is safe for concurrent use.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) WriteString(s string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.WriteString(s)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// scanLog copies r line by line into the returned buffer until EOF. It
// closes seen when a line contains want, and done at EOF.
func scanLog(r io.Reader, want string) (logs *lockedBuffer, seen, done <-chan struct{}) {
	logs = &lockedBuffer{}
	seenCh := make(chan struct{})
	doneCh := make(chan struct{})
	go func() {
		defer close(doneCh)
		found := false
		scanner := bufio.NewScanner(r)
		scanner.Buffer(make([]byte, 64<<10), 1<<20)
		for scanner.Scan() {
			line := scanner.Text()
			logs.WriteString(line + "\n")
			if !found && strings.Contains(line, want) {
				found = true
				close(seenCh)
			}
		}
		// Read to EOF even after a scan error, so the process never
		// blocks on a full pipe.
		_, _ = io.Copy(io.Discard, r)
	}()
	return logs, seenCh, doneCh
}
