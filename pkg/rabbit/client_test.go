package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

func TestClientRunConnectsAndStops(t *testing.T) {
	brokerURL := rabbittest.URL(t)
	client := newClient(t, brokerURL, nil)
	stop := background(t, client.Run)

	waitFor(t, "the client is connected", client.Connected)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.Connection(ctx)
	if err != nil {
		t.Fatalf("Connection: %v", err)
	}
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open a channel on the client's connection: %v", err)
	}
	if err := ch.Close(); err != nil {
		t.Fatalf("close channel: %v", err)
	}

	if err := stop(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
	if !conn.IsClosed() {
		t.Error("the connection is still open after Run returned")
	}
	if client.Connected() {
		t.Error("Connected() = true after Run returned")
	}
	if client.Blocked() {
		t.Error("Blocked() = true after Run returned")
	}
}

func TestClientConnectionWaitsForContext(t *testing.T) {
	client := rabbit.NewClient(rabbit.Config{URL: "amqp://127.0.0.1:1/", Logger: testLogger(t)})
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()

	conn, err := client.Connection(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Connection without Run = %v, want context.DeadlineExceeded", err)
	}
	if conn != nil {
		t.Error("Connection without Run returned a connection")
	}
}

func TestClientRunStopsOnPermanentSetupError(t *testing.T) {
	brokerURL := rabbittest.URL(t)
	names := rabbittest.Namespace(t, brokerURL)
	// A classic queue where the topology declares a quorum queue: the
	// broker rejects the declaration with 406 PRECONDITION_FAILED.
	ch := rabbittest.Channel(t, brokerURL)
	if _, err := ch.QueueDeclare(names.UnroutedQueue(), true, false, false, false, amqp.Table{"x-queue-type": amqp.QueueTypeClassic}); err != nil {
		t.Fatalf("declare classic queue: %v", err)
	}
	var attempts atomic.Int32
	setup := topology.Setup(names)
	client := newClient(t, brokerURL, func(conn *amqp.Connection) error {
		attempts.Add(1)
		return setup(conn)
	})

	done := make(chan error, 1)
	go func() { done <- client.Run(context.Background()) }()
	var err error
	select {
	case err = <-done:
	case <-time.After(stopTimeout):
		t.Fatalf("Run did not return within %s of a permanent setup error", stopTimeout)
	}

	if !rabbit.IsPermanent(err) {
		t.Errorf("Run = %v, want a permanent error", err)
	}
	if !topology.IsPreconditionFailed(err) {
		t.Errorf("Run = %v, want 406 PRECONDITION_FAILED", err)
	}
	if err != nil && !strings.Contains(err.Error(), names.UnroutedQueue()) {
		t.Errorf("error %q does not name the queue %s", err, names.UnroutedQueue())
	}
	if n := attempts.Load(); n != 1 {
		t.Errorf("Setup ran %d times, want 1: a permanent error must not be retried", n)
	}
	if client.Connected() {
		t.Error("Connected() = true after Run failed")
	}
}

func TestClientRunStopsOnRefusedLogin(t *testing.T) {
	const password = "wrong-password"
	u, err := url.Parse(rabbittest.URL(t))
	if err != nil {
		t.Fatalf("parse broker URL: %v", err)
	}
	u.User = url.UserPassword("hookbus-test-no-such-user", password)
	client := newClient(t, u.String(), nil)

	done := make(chan error, 1)
	go func() { done <- client.Run(context.Background()) }()
	select {
	case err = <-done:
	case <-time.After(stopTimeout):
		t.Fatalf("Run did not return within %s of a refused login", stopTimeout)
	}

	if !rabbit.IsPermanent(err) {
		t.Errorf("Run = %v, want a permanent error", err)
	}
	if err != nil && strings.Contains(err.Error(), password) {
		t.Errorf("error %q contains the password", err)
	}
}

func TestClientRunRetriesTransientSetupError(t *testing.T) {
	brokerURL := rabbittest.URL(t)
	var attempts atomic.Int32
	client := newClient(t, brokerURL, func(conn *amqp.Connection) error {
		if attempts.Add(1) < 3 {
			return errors.New("setup not ready yet")
		}
		return nil
	})
	stop := background(t, client.Run)

	waitFor(t, "the client is connected", client.Connected)
	if n := attempts.Load(); n != 3 {
		t.Errorf("Setup ran %d times, want 3 (two failures, then success)", n)
	}
	if err := stop(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

// TestClientRunRetriesUnreachableBroker points the client at a listener of
// the test that accepts and closes every connection, so every dial fails.
func TestClientRunRetriesUnreachableBroker(t *testing.T) {
	addr, accepted := closingListener(t)

	client := newClient(t, fmt.Sprintf("amqp://guest:guest@%s/", addr), nil)
	stop := background(t, client.Run)

	waitFor(t, "the client has tried three times", func() bool { return accepted.Load() >= 3 })
	if client.Connected() {
		t.Error("Connected() = true without a broker")
	}
	if err := stop(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

func TestIsPermanent(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"precondition failed", &amqp.Error{Code: amqp.PreconditionFailed}, true},
		{"access refused", &amqp.Error{Code: amqp.AccessRefused}, true},
		{"wrapped precondition failed", fmt.Errorf("declare queue %q: %w", "q", &amqp.Error{Code: amqp.PreconditionFailed}), true},
		{"failed login", amqp.ErrCredentials, true},
		{"no SASL mechanism", amqp.ErrSASL, true},
		{"not found", &amqp.Error{Code: amqp.NotFound}, false},
		{"connection forced", &amqp.Error{Code: amqp.ConnectionForced}, false},
		{"closed", amqp.ErrClosed, false},
		{"other error", errors.New("connection refused"), false},
		{"nil", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := rabbit.IsPermanent(tc.err); got != tc.want {
				t.Errorf("IsPermanent(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}

func TestRedactURL(t *testing.T) {
	tests := []struct {
		url  string
		want string
	}{
		{"amqp://guest:guest@127.0.0.1:5672/", "amqp://guest:xxxxx@127.0.0.1:5672/"},
		{"amqps://hookbus:s3cret@rabbit.example:5671/prod", "amqps://hookbus:xxxxx@rabbit.example:5671/prod"},
		{"amqp://127.0.0.1:5672/", "amqp://127.0.0.1:5672/"},
		{"amqp://user@127.0.0.1/", "amqp://user@127.0.0.1/"},
		{"amqp://user:pass@[::1", "(unparsable URL)"},
	}
	for _, tc := range tests {
		if got := rabbit.RedactURL(tc.url); got != tc.want {
			t.Errorf("RedactURL(%q) = %q, want %q", tc.url, got, tc.want)
		}
	}
}
