package rabbit_test

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// TestMain fails the test binary when goroutines are still running after
// all tests and benchmarks, for example the reader of an amqp091-go
// connection that a test did not close.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// stopTimeout bounds how long a background Run may take to return after its
// context is cancelled before the test fails.
const stopTimeout = 30 * time.Second

// background runs fn in a goroutine until stop is called or the test ends.
// stop cancels fn's context, waits for fn to return and returns its error.
func background(tb testing.TB, fn func(ctx context.Context) error) (stop func() error) {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- fn(ctx) }()

	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(stopTimeout):
				tb.Errorf("background run did not return within %s of its context being cancelled", stopTimeout)
			}
		})
		return err
	}
	tb.Cleanup(func() { _ = stop() })
	return stop
}

// waitFor polls cond until it is true and fails the test when 15 seconds
// pass first.
func waitFor(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(10 * time.Millisecond) // polling interval
	}
}

// testLogger returns a logger whose output the test prints on failure or
// with -v.
func testLogger(tb testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tb.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// newClient returns a client of the broker with short reconnection
// backoffs, so that tests of reconnection run fast.
func newClient(tb testing.TB, url string, setup func(*amqp.Connection) error) *rabbit.Client {
	return rabbit.NewClient(rabbit.Config{
		URL:        url,
		Name:       "hookbus-test " + tb.Name(),
		MinBackoff: 10 * time.Millisecond,
		MaxBackoff: 200 * time.Millisecond,
		Setup:      setup,
		Logger:     testLogger(tb),
	})
}

// publishEnv is a running Client and Publisher on a test namespace with one
// route, "all", bound to every routing key.
type publishEnv struct {
	url       string
	names     topology.Names
	client    *rabbit.Client
	publisher *rabbit.Publisher
	stop      func() error // stops the client
	ch        *amqp.Channel
}

func startPublishEnv(tb testing.TB, channels int) *publishEnv {
	tb.Helper()
	url := rabbittest.URL(tb)
	names := rabbittest.Namespace(tb, url, "all")
	client := newClient(tb, url, topology.Setup(names, topology.Route{Name: "all", Bindings: []string{"#"}}))
	publisher := rabbit.NewPublisher(client, channels, testLogger(tb))

	env := &publishEnv{url: url, names: names, client: client, publisher: publisher}
	// Cleanups run in reverse order, so the publisher stops before the
	// client.
	env.stop = background(tb, client.Run)
	background(tb, func(ctx context.Context) error {
		publisher.Run(ctx)
		return nil
	})
	waitFor(tb, "the publisher is ready", publisher.Ready)
	env.ch = rabbittest.Channel(tb, url)
	return env
}

// message returns a small persistent publishing with the id.
func message(id string) amqp.Publishing {
	return amqp.Publishing{
		MessageId:    id,
		DeliveryMode: amqp.Persistent,
		ContentType:  "application/json",
		Body:         []byte(`{"id":"` + id + `"}`),
	}
}

// closingListener starts a TCP listener that accepts connections and closes
// them at once, like a broker node that is going down. It returns the
// listener's address and the number of connections accepted so far.
func closingListener(tb testing.TB) (addr string, accepted *atomic.Int32) {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	accepted = new(atomic.Int32)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = conn.Close()
		}
	}()
	tb.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return ln.Addr().String(), accepted
}
