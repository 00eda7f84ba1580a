package rabbit_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/rabbittest"
)

// Both publish benchmarks send the same load: 2 KiB persistent messages
// from about 64 goroutines to a quorum queue, which is what route queues
// are. The queue keeps only its newest 10,000 messages, so a long run does
// not fill the broker's disk.
const (
	benchBodySize    = 2 << 10
	benchPublishers  = 64
	benchQueueLength = 10_000
	benchRoutingKey  = "bench.publish"
)

// benchExchange declares an exchange and a bounded quorum queue bound to
// it, both deleted when the benchmark ends, and returns the exchange.
func benchExchange(b *testing.B, url string) string {
	b.Helper()
	name := rabbittest.Namespace(b, url).Namespace() + ".bench"
	ch := rabbittest.Channel(b, url)
	if err := ch.ExchangeDeclare(name, amqp.ExchangeTopic, false, false, false, false, nil); err != nil {
		b.Fatalf("declare exchange %s: %v", name, err)
	}
	args := amqp.Table{
		"x-queue-type": amqp.QueueTypeQuorum,
		"x-max-length": benchQueueLength,
		"x-overflow":   "drop-head",
	}
	if _, err := ch.QueueDeclare(name, true, false, false, false, args); err != nil {
		b.Fatalf("declare queue %s: %v", name, err)
	}
	if err := ch.QueueBind(name, "#", name, false, nil); err != nil {
		b.Fatalf("bind queue %s: %v", name, err)
	}
	b.Cleanup(func() {
		ch := rabbittest.Channel(b, url)
		if _, err := ch.QueueDelete(name, false, false, false); err != nil {
			b.Errorf("delete queue %s: %v", name, err)
		}
		if err := ch.ExchangeDelete(name, false, false); err != nil {
			b.Errorf("delete exchange %s: %v", name, err)
		}
	})
	return name
}

func benchBody() []byte {
	return bytes.Repeat([]byte("x"), benchBodySize)
}

// runPublishers runs publish on about benchPublishers goroutines until b.N
// messages are published, and reports the rate in messages per second.
func runPublishers(b *testing.B, publish func(ctx context.Context, msg amqp.Publishing) error) {
	body := benchBody()
	var seq atomic.Uint64
	ctx := context.Background()

	b.SetParallelism(max(1, benchPublishers/runtime.GOMAXPROCS(0)))
	b.SetBytes(benchBodySize)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			msg := amqp.Publishing{
				MessageId:    "bench-" + strconv.FormatUint(seq.Add(1), 10),
				DeliveryMode: amqp.Persistent,
				ContentType:  "application/json",
				Body:         body,
			}
			if err := publish(ctx, msg); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
}

// BenchmarkPublish measures confirmed publishes through Publisher.
func BenchmarkPublish(b *testing.B) {
	url := rabbittest.URL(b)
	for _, channels := range []int{1, 4} {
		b.Run(fmt.Sprintf("channels=%d", channels), func(b *testing.B) {
			exchange := benchExchange(b, url)
			// Benchmarks print their log output even without -v, so
			// log only warnings.
			logger := slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
			client := rabbit.NewClient(rabbit.Config{URL: url, Name: "hookbus-test " + b.Name(), Logger: logger})
			publisher := rabbit.NewPublisher(client, channels, logger)
			background(b, client.Run)
			background(b, func(ctx context.Context) error {
				publisher.Run(ctx)
				return nil
			})
			waitFor(b, "the publisher is ready", publisher.Ready)

			runPublishers(b, func(ctx context.Context, msg amqp.Publishing) error {
				return publisher.Publish(ctx, exchange, benchRoutingKey, msg)
			})
		})
	}
}

// BenchmarkPublishRaw is the baseline for BenchmarkPublish/channels=1: the
// same load published with amqp091-go directly on one confirm-mode channel,
// each goroutine waiting for its own deferred confirmation. It does no
// return tracking, reconnection or channel management.
func BenchmarkPublishRaw(b *testing.B) {
	url := rabbittest.URL(b)
	exchange := benchExchange(b, url)
	conn, err := amqp.Dial(url)
	if err != nil {
		b.Fatalf("dial broker: %v", err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	ch, err := conn.Channel()
	if err != nil {
		b.Fatalf("open channel: %v", err)
	}
	if err := ch.Confirm(false); err != nil {
		b.Fatalf("enable confirms: %v", err)
	}

	runPublishers(b, func(ctx context.Context, msg amqp.Publishing) error {
		confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, benchRoutingKey, true, false, msg)
		if err != nil {
			return err
		}
		acked, err := confirm.WaitContext(ctx)
		if err != nil {
			return err
		}
		if !acked {
			return fmt.Errorf("broker nacked message %s", msg.MessageId)
		}
		return nil
	})
}
