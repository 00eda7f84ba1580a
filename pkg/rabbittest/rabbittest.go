// Package rabbittest connects integration tests to a real RabbitMQ and gives
// each test a namespace of its own that is deleted when the test ends.
//
// The broker URL comes from HOOKBUS_AMQP_URL (default
// amqp://guest:guest@127.0.0.1:5672/). When no broker accepts connections,
// tests are skipped with instructions, except when CI=true: then they fail.
package rabbittest

import (
	"crypto/rand"
	"encoding/hex"
	"os"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/topology"
)

// DefaultURL is the broker URL used when HOOKBUS_AMQP_URL is not set.
const DefaultURL = "amqp://guest:guest@127.0.0.1:5672/"

// URL returns the broker URL after checking that a broker accepts connections there.
func URL(tb testing.TB) string {
	tb.Helper()
	url := os.Getenv("HOOKBUS_AMQP_URL")
	if url == "" {
		url = DefaultURL
	}
	conn, err := amqp.DialConfig(url, amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		msg := "no RabbitMQ broker at HOOKBUS_AMQP_URL (" + rabbit.RedactURL(url) + "): " + err.Error() +
			"; start one with `rabbitmq-server -detached` or " +
			"`docker run -d -p 5672:5672 rabbitmq:3.13-management`"
		if os.Getenv("CI") == "true" {
			tb.Fatal(msg)
		}
		tb.Skip(msg)
	}
	_ = conn.Close()
	return url
}

// Namespace returns the names of a new namespace, "test-<random>", and
// registers a cleanup that deletes the namespace's shared objects and the
// queues of the given routes.
func Namespace(tb testing.TB, url string, routes ...string) topology.Names {
	tb.Helper()
	buf := make([]byte, 6)
	_, _ = rand.Read(buf)
	names, err := topology.NewNames("test-" + hex.EncodeToString(buf))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			tb.Errorf("delete namespace %s: %v", names.Namespace(), err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			tb.Errorf("delete namespace %s: %v", names.Namespace(), err)
			return
		}
		if err := topology.Delete(ch, names, routes...); err != nil {
			tb.Errorf("delete namespace %s: %v", names.Namespace(), err)
		}
		if err := topology.DeleteDelays(ch, names, topology.DefaultRetrySchedule); err != nil {
			tb.Errorf("delete namespace %s: %v", names.Namespace(), err)
		}
	})
	return names
}

// DeleteDelays registers a cleanup that deletes the delay queues of the
// schedules in the namespace. Namespace already deletes those of
// topology.DefaultRetrySchedule; tests that use other schedules call this.
func DeleteDelays(tb testing.TB, url string, names topology.Names, schedules ...topology.RetrySchedule) {
	tb.Helper()
	tb.Cleanup(func() {
		conn, err := amqp.Dial(url)
		if err != nil {
			tb.Errorf("delete delay queues of %s: %v", names.Namespace(), err)
			return
		}
		defer conn.Close()
		ch, err := conn.Channel()
		if err != nil {
			tb.Errorf("delete delay queues of %s: %v", names.Namespace(), err)
			return
		}
		if err := topology.DeleteDelays(ch, names, schedules...); err != nil {
			tb.Errorf("delete delay queues of %s: %v", names.Namespace(), err)
		}
	})
}

// Channel opens a connection and a channel for a test to inspect queues
// with, and closes both when the test ends.
func Channel(tb testing.TB, url string) *amqp.Channel {
	tb.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		tb.Fatalf("dial broker: %v", err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		tb.Fatalf("open channel: %v", err)
	}
	return ch
}

// Drain takes up to n messages from queue with basic.get, acking each, and
// waits until n have arrived or the timeout passed. It returns what it got.
func Drain(tb testing.TB, ch *amqp.Channel, queue string, n int, timeout time.Duration) []amqp.Delivery {
	tb.Helper()
	var got []amqp.Delivery
	deadline := time.Now().Add(timeout)
	for len(got) < n && time.Now().Before(deadline) {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			tb.Fatalf("get from %s: %v", queue, err)
		}
		if !ok {
			time.Sleep(20 * time.Millisecond) // polling interval: basic.get has no wait
			continue
		}
		got = append(got, d)
	}
	return got
}

// MessageCount returns the number of ready messages in queue, as the broker
// reports it in queue.declare-ok (exact, unlike management statistics).
func MessageCount(tb testing.TB, ch *amqp.Channel, queue string) int {
	tb.Helper()
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		tb.Fatalf("inspect queue %s: %v", queue, err)
	}
	return q.Messages
}
