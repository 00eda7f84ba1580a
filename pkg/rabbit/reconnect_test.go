package rabbit_test

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// reconnects is how often TestReconnectLeaksNothing cuts the connection.
const reconnects = 200

func TestReconnectLeaksNothing(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, "all")
	proxy := rabbittest.NewProxy(t, rabbittest.HostPort(t, url))
	client := newClient(t, proxy.URL(url), topology.Setup(names, topology.Route{Name: "all", Bindings: []string{"#"}}))
	publisher := rabbit.NewPublisher(client, 4, testLogger(t))
	stop := background(t, client.Run)
	stopPublisher := background(t, func(ctx context.Context) error {
		publisher.Run(ctx)
		return nil
	})

	publish := func(i int) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := publisher.Publish(ctx, names.Exchange(), "test.event", message(fmt.Sprintf("reconnect-%d", i))); err != nil {
			t.Fatalf("publish after reconnect %d: %v", i, err)
		}
	}

	waitFor(t, "the publisher is ready", publisher.Ready)
	publish(0)
	runtime.GC()
	baseline := runtime.NumGoroutine()

	for i := 1; i <= reconnects; i++ {
		proxy.Cut()
		waitFor(t, "the client notices the cut", func() bool { return !client.Connected() })
		proxy.Restore()
		waitFor(t, "the publisher is ready again", publisher.Ready)
	}
	publish(reconnects)

	// Goroutines of closed connections may take a moment to end.
	deadline := time.Now().Add(10 * time.Second)
	for {
		runtime.GC()
		n := runtime.NumGoroutine()
		if n <= baseline+5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after %d reconnects, %d before: a reconnect leaks goroutines", n, reconnects, baseline)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}

	ch := rabbittest.Channel(t, url)
	if got := rabbittest.MessageCount(t, ch, names.RouteQueue("all")); got < 2 {
		t.Errorf("route queue has %d messages, want the 2 confirmed ones", got)
	}
	if err := stopPublisher(); err != nil {
		t.Errorf("publisher Run: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("client Run: %v", err)
	}
}
