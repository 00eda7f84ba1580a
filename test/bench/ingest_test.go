package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	ingestservice "github.com/hookbus/hookbus/ingest/service"
	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// concurrency is the number of goroutines that send requests or publish
// messages at the same time in both benchmarks.
const concurrency = 32

// routeName is the route whose queue, bound to "#", keeps every message of
// a benchmark run until the purge after the timed loop.
const routeName = "bench"

// Bounds of single steps, so that a stuck broker or service ends the run
// instead of hanging it.
const (
	startTimeout   = 30 * time.Second // until ingest reports ready
	requestTimeout = 30 * time.Second // one HTTP request or one confirmed publish
	stopTimeout    = 30 * time.Second // until ingest's Run returns
)

// The payload is a Stripe payment_intent.succeeded event of 1744 bytes,
// posted with the headers that Stripe sends (see ../testdata/README.md).
// Ingest takes the message id from the body, so every request carries the
// same id. Ingest does not deduplicate, so it publishes each request.
const (
	payloadFile      = "stripe/payment_intent.succeeded.json"
	payloadSource    = "stripe"
	payloadID        = "evt_1IlYUUJDPojXS6LN7NEWYSm2"
	payloadEventType = "payment_intent.succeeded"
)

func payloadHeader() http.Header {
	header := http.Header{}
	header.Set("Content-Type", "application/json; charset=utf-8")
	header.Set("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
	header.Set("Accept", "*/*; q=0.5, application/xml")
	header.Set("Cache-Control", "no-cache")
	header.Set("Stripe-Signature", "t=1700000000,v1=b33cd0ab73591247f7cea41823de13c36347ab3c9982f54b0eb9984640a8210a")
	return header
}

// BenchmarkIngest posts b.N webhooks from 32 goroutines over keep-alive
// connections to an ingest running in the benchmark's process, and reports
// requests per second and the 50th and 99th percentile latency of a
// request. Every response must be 202, which ingest sends only after the
// broker confirmed the message.
func BenchmarkIngest(b *testing.B) {
	amqpURL := rabbittest.URL(b)
	names, ch := declareRouteQueue(b, amqpURL)
	body := readPayload(b)
	header := payloadHeader()
	baseURL := startIngest(b, amqpURL, names)
	url := baseURL + "/webhooks/" + payloadSource

	client := &http.Client{
		Timeout: requestTimeout,
		Transport: &http.Transport{
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        2 * concurrency,
			MaxIdleConnsPerHost: 2 * concurrency,
			IdleConnTimeout:     time.Minute,
		},
	}
	b.Cleanup(client.CloseIdleConnections)
	post := func(int) error {
		return postWebhook(client, url, header, body)
	}

	// One request per goroutine opens the keep-alive connections before
	// the timer starts.
	if _, _, err := runConcurrently(concurrency, post); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	purgeRouteQueue(b, ch, names, concurrency)

	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	latencies, elapsed, err := runConcurrently(b.N, post)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	reportRate(b, latencies, elapsed, "req/s")
	purgeRouteQueue(b, ch, names, b.N)
}

// BenchmarkBrokerPublish publishes b.N messages from 32 goroutines straight
// to the broker, each goroutine on its own confirm-mode channel of one
// connection, and waits for each confirm before the next publish.
// contract.Message.Encode builds the persistent messages from the Stripe
// headers and the body of BenchmarkIngest, and they go to the same exchange
// with the same routing key. The messages that ingest publishes are under
// 200 bytes larger: they also carry the HTTP request's Content-Length and
// Accept-Encoding headers and ingest's own metadata headers. The benchmark
// reports messages per second and the 50th and 99th percentile latency of a
// confirmed publish.
func BenchmarkBrokerPublish(b *testing.B) {
	amqpURL := rabbittest.URL(b)
	names, ch := declareRouteQueue(b, amqpURL)
	body := readPayload(b)
	msg := contract.Message{
		ID:          payloadID,
		Source:      payloadSource,
		EventType:   payloadEventType,
		ContentType: payloadHeader().Get("Content-Type"),
		ReceivedAt:  time.Now(),
		Header:      contract.FilterHeader(payloadHeader()),
		Body:        body,
	}
	publishing, err := msg.Encode()
	if err != nil {
		b.Fatalf("encode message: %v", err)
	}
	routingKey := msg.RoutingKey()

	conn, err := amqp.Dial(amqpURL)
	if err != nil {
		b.Fatalf("dial broker: %v", err)
	}
	b.Cleanup(func() { _ = conn.Close() })
	channels := make([]*amqp.Channel, concurrency)
	for i := range channels {
		if channels[i], err = conn.Channel(); err != nil {
			b.Fatalf("open channel: %v", err)
		}
		if err := channels[i].Confirm(false); err != nil {
			b.Fatalf("enable confirm mode: %v", err)
		}
	}
	publish := func(worker int) error {
		ctx, cancel := context.WithTimeout(context.Background(), requestTimeout)
		defer cancel()
		confirm, err := channels[worker].PublishWithDeferredConfirmWithContext(ctx, names.Exchange(), routingKey, false, false, publishing)
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		acked, err := confirm.WaitContext(ctx)
		if err != nil {
			return fmt.Errorf("wait for confirm: %w", err)
		}
		if !acked {
			return errors.New("broker rejected the message (basic.nack)")
		}
		return nil
	}

	if _, _, err := runConcurrently(concurrency, publish); err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	purgeRouteQueue(b, ch, names, concurrency)

	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	latencies, elapsed, err := runConcurrently(b.N, publish)
	b.StopTimer()
	if err != nil {
		b.Fatal(err)
	}
	reportRate(b, latencies, elapsed, "msg/s")
	purgeRouteQueue(b, ch, names, b.N)
}

// declareRouteQueue declares the topology of a new namespace with one route
// queue bound to "#", so that every message published to the namespace's
// exchange lands in it. The namespace is deleted when the benchmark run
// ends. It returns the names and a channel for inspecting the queue.
func declareRouteQueue(b *testing.B, amqpURL string) (topology.Names, *amqp.Channel) {
	b.Helper()
	names := rabbittest.Namespace(b, amqpURL, routeName)
	ch := rabbittest.Channel(b, amqpURL)
	if err := topology.Declare(ch, names); err != nil {
		b.Fatalf("declare topology: %v", err)
	}
	route := topology.Route{Name: routeName, Bindings: []string{"#"}}
	if err := topology.DeclareRoute(ch, names, route); err != nil {
		b.Fatalf("declare route: %v", err)
	}
	return names, ch
}

// purgeRouteQueue empties the route queue and fails the benchmark unless it
// contained exactly want messages, which proves that every confirmed message was
// routed to it.
func purgeRouteQueue(b *testing.B, ch *amqp.Channel, names topology.Names, want int) {
	b.Helper()
	purged, err := ch.QueuePurge(names.RouteQueue(routeName), false)
	if err != nil {
		b.Fatalf("purge route queue: %v", err)
	}
	if purged != want {
		b.Fatalf("route queue contained %d messages, want %d", purged, want)
	}
}

func readPayload(b *testing.B) []byte {
	b.Helper()
	body, err := os.ReadFile(filepath.Join("..", "testdata", filepath.FromSlash(payloadFile)))
	if err != nil {
		b.Fatalf("read payload: %v", err)
	}
	return body
}

// startIngest runs ingest with its default configuration on a free loopback
// port, publishing into the namespace of names, waits until it is ready and
// returns its base URL. Ingest logs errors only, because a failed publish
// also fails the request and so the benchmark. A cleanup stops it.
func startIngest(b *testing.B, amqpURL string, names topology.Names) string {
	b.Helper()
	var cfg ingestservice.Config
	if err := config.Load(&cfg); err != nil {
		b.Fatalf("load ingest configuration: %v", err)
	}
	cfg.AMQPURL = amqpURL
	cfg.Namespace = names.Namespace()
	cfg.Addr = "127.0.0.1:0"

	logger := slog.New(slog.NewTextHandler(b.Output(), &slog.HandlerOptions{Level: slog.LevelError}))
	svc, err := ingestservice.New(cfg, logger)
	if err != nil {
		b.Fatalf("create ingest: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- svc.Run(ctx)
	}()
	b.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				b.Errorf("ingest Run returned an error: %v", err)
			}
		case <-time.After(stopTimeout):
			b.Errorf("ingest Run did not return within %s of cancellation", stopTimeout)
		}
	})

	deadline := time.Now().Add(startTimeout)
	for !svc.Ready() {
		if time.Now().After(deadline) {
			b.Fatalf("ingest not ready after %s", startTimeout)
		}
		select {
		case err := <-done:
			done <- err
			b.Fatalf("ingest stopped before it was ready: %v", err)
		case <-time.After(20 * time.Millisecond): // polling interval
		}
	}
	return "http://" + svc.Addr()
}

// postWebhook posts body with header to url and returns an error unless the
// response is 202. It reads the whole response so that the connection can
// be reused.
func postWebhook(client *http.Client, url string, header http.Header, body []byte) error {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header = header.Clone()
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("post webhook: %w", err)
	}
	defer resp.Body.Close()
	respBody, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusAccepted {
		return fmt.Errorf("status %d, want 202; body %q", resp.StatusCode, respBody)
	}
	return nil
}

// runConcurrently calls op n times in total from concurrency goroutines,
// passing each call the index of its goroutine, and returns the latency of
// every call and the wall time of all calls. After the first error no
// goroutine starts another call, and that error is returned.
func runConcurrently(n int, op func(worker int) error) (latencies []time.Duration, elapsed time.Duration, err error) {
	latencies = make([]time.Duration, n)
	var (
		next     atomic.Int64
		failed   atomic.Bool
		errOnce  sync.Once
		firstErr error
		wg       sync.WaitGroup
	)
	start := time.Now()
	for worker := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				callStart := time.Now()
				if err := op(worker); err != nil {
					errOnce.Do(func() { firstErr = fmt.Errorf("call %d of %d: %w", i+1, n, err) })
					failed.Store(true)
					return
				}
				latencies[i] = time.Since(callStart)
			}
		}()
	}
	wg.Wait()
	return latencies, time.Since(start), firstErr
}

// reportRate reports the calls per second under the given unit and the
// 50th and 99th percentile latency in milliseconds, as p50-ms and p99-ms.
func reportRate(b *testing.B, latencies []time.Duration, elapsed time.Duration, unit string) {
	b.ReportMetric(float64(len(latencies))/elapsed.Seconds(), unit)
	sorted := slices.Clone(latencies)
	slices.Sort(sorted)
	b.ReportMetric(percentile(sorted, 0.50).Seconds()*1000, "p50-ms")
	b.ReportMetric(percentile(sorted, 0.99).Seconds()*1000, "p99-ms")
}

// percentile returns the quantile q (0 < q <= 1) of the sorted durations by
// the nearest-rank method: the smallest duration that is greater than or
// equal to a fraction q of all durations.
func percentile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(math.Ceil(float64(len(sorted)) * q))
	return sorted[min(max(rank, 1), len(sorted))-1]
}
