package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

func TestProviderWebhookReachesHandler(t *testing.T) {
	amqpURL := rabbittest.URL(t)
	for _, fixture := range providerFixtures() {
		t.Run(fixture.name, func(t *testing.T) {
			names := rabbittest.Namespace(t, amqpURL, routeName)
			rec := newRecorder(16)
			proc := startProcessor(t, amqpURL, names, rec.route())
			ingest := startIngest(t, amqpURL, names)
			client := newHTTPClient(t)
			body := readFixture(t, fixture.file)

			accepted := mustPost(t, client, ingest.baseURL, fixture.source, fixture.header, body)
			if accepted.ID != fixture.id {
				t.Errorf("202 response id = %q, want %q", accepted.ID, fixture.id)
			}
			wantKey := contract.RoutingKey(fixture.source, fixture.eventType)
			if accepted.RoutingKey != wantKey {
				t.Errorf("202 response routing_key = %q, want %q", accepted.RoutingKey, wantKey)
			}

			msg := rec.waitForID(t, fixture.id)
			if !bytes.Equal(msg.Body, body) {
				t.Errorf("handler got a body of %d bytes that differs from the %d bytes of %s", len(msg.Body), len(body), fixture.file)
			}
			if msg.Source != fixture.source {
				t.Errorf("Source = %q, want %q", msg.Source, fixture.source)
			}
			if msg.EventType != fixture.eventType {
				t.Errorf("EventType = %q, want %q", msg.EventType, fixture.eventType)
			}
			if want := fixture.header.Get("Content-Type"); msg.ContentType != want {
				t.Errorf("ContentType = %q, want %q", msg.ContentType, want)
			}
			for name, want := range fixture.header {
				if got := msg.Header.Values(name); !slices.Equal(got, want) {
					t.Errorf("header %s = %q, want %q", name, got, want)
				}
			}

			counts := stopAfterMarker(t, client, ingest, proc, rec)
			if counts[fixture.id] != 1 {
				t.Errorf("handler received message %s %d times, want once", fixture.id, counts[fixture.id])
			}
			if len(rec.received) != 2 {
				t.Errorf("handler received %d messages, want 2 (the webhook and the marker)", len(rec.received))
			}
			ch := rabbittest.Channel(t, amqpURL)
			if n := rabbittest.MessageCount(t, ch, names.RouteQueue(routeName)); n != 0 {
				t.Errorf("route queue contains %d messages after the processor stopped, want 0", n)
			}
		})
	}
}

func TestStoppedProcessorQueuesWebhook(t *testing.T) {
	amqpURL := rabbittest.URL(t)
	names := rabbittest.Namespace(t, amqpURL, routeName)
	ch := rabbittest.Channel(t, amqpURL)
	// The processor that would declare the route has not started yet, so
	// the test declares the route's queue as that processor will.
	rec := newRecorder(16)
	if err := topology.Declare(ch, names); err != nil {
		t.Fatalf("declare topology: %v", err)
	}
	if err := topology.DeclareRoute(ch, names, rec.route().Route); err != nil {
		t.Fatalf("declare route: %v", err)
	}
	ingest := startIngest(t, amqpURL, names)
	client := newHTTPClient(t)
	fixture := githubPush()
	body := readFixture(t, fixture.file)

	mustPost(t, client, ingest.baseURL, fixture.source, fixture.header, body)

	routeQueue := names.RouteQueue(routeName)
	waitUntil(t, arrivalTimeout, "one message in "+routeQueue, func() bool {
		return rabbittest.MessageCount(t, ch, routeQueue) == 1
	})
	if n := rabbittest.MessageCount(t, ch, names.UnroutedQueue()); n != 0 {
		t.Errorf("unrouted queue contains %d messages, want 0", n)
	}

	proc := startProcessor(t, amqpURL, names, rec.route())
	msg := rec.waitForID(t, fixture.id)
	if !bytes.Equal(msg.Body, body) {
		t.Errorf("handler got a body of %d bytes that differs from the %d bytes of %s", len(msg.Body), len(body), fixture.file)
	}
	if msg.EventType != fixture.eventType {
		t.Errorf("EventType = %q, want %q", msg.EventType, fixture.eventType)
	}

	// A delivered but unacknowledged message does not count as ready.
	// Stopping the processor returns such a message to the queue, so an
	// empty queue afterwards means the handler's ack reached the broker.
	proc.stop(t)
	if n := rabbittest.MessageCount(t, ch, routeQueue); n != 0 {
		t.Errorf("%s contains %d messages after the processor stopped, want 0", routeQueue, n)
	}
}

func TestWebhookWithoutRoutesIsUnrouted(t *testing.T) {
	amqpURL := rabbittest.URL(t)
	names := rabbittest.Namespace(t, amqpURL)
	ingest := startIngest(t, amqpURL, names)
	client := newHTTPClient(t)
	fixtures := []webhookFixture{githubPush(), shopifyOrderCreated()}
	bodies := map[string][]byte{}
	for _, fixture := range fixtures {
		bodies[fixture.id] = readFixture(t, fixture.file)
		mustPost(t, client, ingest.baseURL, fixture.source, fixture.header, bodies[fixture.id])
	}

	ch := rabbittest.Channel(t, amqpURL)
	unrouted := names.UnroutedQueue()
	waitUntil(t, arrivalTimeout, fmt.Sprintf("%d messages in %s", len(fixtures), unrouted), func() bool {
		return rabbittest.MessageCount(t, ch, unrouted) == len(fixtures)
	})

	deliveries := rabbittest.Drain(t, ch, unrouted, len(fixtures), arrivalTimeout)
	if len(deliveries) != len(fixtures) {
		t.Fatalf("took %d messages from %s, want %d", len(deliveries), unrouted, len(fixtures))
	}
	got := map[string]*amqp.Delivery{}
	for i := range deliveries {
		got[deliveries[i].MessageId] = &deliveries[i]
	}
	for _, fixture := range fixtures {
		d := got[fixture.id]
		if d == nil {
			t.Errorf("no message with id %s in %s", fixture.id, unrouted)
			continue
		}
		if want := contract.RoutingKey(fixture.source, fixture.eventType); d.RoutingKey != want {
			t.Errorf("message %s has routing key %q, want %q", fixture.id, d.RoutingKey, want)
		}
		msg, err := contract.Decode(d)
		if err != nil {
			t.Errorf("decode message %s: %v", fixture.id, err)
			continue
		}
		if !bytes.Equal(msg.Body, bodies[fixture.id]) {
			t.Errorf("message %s has a body of %d bytes that differs from the %d bytes of %s", fixture.id, len(msg.Body), len(bodies[fixture.id]), fixture.file)
		}
	}
}

func TestConcurrentPostsHandledOnce(t *testing.T) {
	const (
		posts   = 1000
		workers = 50
		// postsTimeout bounds all posts together.
		postsTimeout = 2 * time.Minute
	)
	amqpURL := rabbittest.URL(t)
	names := rabbittest.Namespace(t, amqpURL, routeName)
	rec := newRecorder(posts + 16)
	proc := startProcessor(t, amqpURL, names, rec.route())
	ingest := startIngest(t, amqpURL, names)
	client := newHTTPClient(t)
	fixture := githubPush()
	body := readFixture(t, fixture.file)

	ids := make([]string, posts)
	for i := range ids {
		ids[i] = fmt.Sprintf("concurrent-%04d-%s", i, randomHex(4))
	}
	errs := make([]error, posts) // errs[i] belongs to the worker that posts ids[i]
	ctx, cancel := context.WithTimeout(t.Context(), postsTimeout)
	defer cancel()
	jobs := make(chan int)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				header := fixture.header.Clone()
				header.Set("X-GitHub-Delivery", ids[i])
				accepted, err := postWebhook(ctx, client, ingest.baseURL, fixture.source, header, body)
				if err == nil && accepted.ID != ids[i] {
					err = fmt.Errorf("202 response id = %q, want %q", accepted.ID, ids[i])
				}
				errs[i] = err
			}
		}()
	}
	for i := range ids {
		jobs <- i
	}
	close(jobs)
	wg.Wait()

	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			if failed <= 10 {
				t.Errorf("post %s: %v", ids[i], err)
			}
		}
	}
	if failed > 0 {
		t.Fatalf("%d of %d posts failed", failed, posts)
	}

	pending := map[string]bool{}
	for _, id := range ids {
		pending[id] = true
	}
	checked := 0
	rec.waitFor(t, fmt.Sprintf("all %d webhooks", posts), func() bool {
		for ; checked < len(rec.received); checked++ {
			delete(pending, rec.received[checked].ID)
		}
		return len(pending) == 0
	})

	counts := stopAfterMarker(t, client, ingest, proc, rec)
	miscounted := 0
	for _, id := range ids {
		if counts[id] != 1 {
			miscounted++
			if miscounted <= 10 {
				t.Errorf("handler received message %s %d times, want once", id, counts[id])
			}
		}
	}
	if miscounted > 10 {
		t.Errorf("%d of %d messages were not received exactly once", miscounted, posts)
	}
	if len(rec.received) != posts+1 {
		t.Errorf("handler received %d messages, want %d (the webhooks and the marker)", len(rec.received), posts+1)
	}
	ch := rabbittest.Channel(t, amqpURL)
	if n := rabbittest.MessageCount(t, ch, names.RouteQueue(routeName)); n != 0 {
		t.Errorf("route queue contains %d messages after the processor stopped, want 0", n)
	}
}

func TestFailingHandlerParksWebhook(t *testing.T) {
	amqpURL := rabbittest.URL(t)
	errRejected := errors.New("e2e: handler rejects every message")
	tests := []struct {
		name       string
		err        error                // what the handler returns
		retry      *consume.RetryPolicy // the route's retry policy, nil for the processor's
		wantReason string
		wantCalls  int
	}{
		{
			name:       "permanent error",
			err:        consume.Permanent(errRejected),
			wantReason: consume.ReasonPermanentError,
			wantCalls:  1,
		},
		{
			name: "transient error",
			err:  errRejected,
			retry: &consume.RetryPolicy{
				RetrySchedule: topology.RetrySchedule{Delays: []time.Duration{100 * time.Millisecond}},
				MaxAttempts:   3,
			},
			wantReason: consume.ReasonAttemptsExhausted,
			wantCalls:  3,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			names := rabbittest.Namespace(t, amqpURL, routeName)
			if tt.retry != nil {
				rabbittest.DeleteDelays(t, amqpURL, names, tt.retry.RetrySchedule)
			}
			var calls atomic.Int32
			failing := consume.Route{
				Route: topology.Route{Name: routeName, Bindings: []string{"#"}},
				Handler: consume.HandlerFunc(func(context.Context, *contract.Message) error {
					calls.Add(1)
					return tt.err
				}),
				Retry: tt.retry,
			}
			proc := startProcessor(t, amqpURL, names, failing)
			ingest := startIngest(t, amqpURL, names)
			client := newHTTPClient(t)
			fixture := stripeInvoicePaid()
			body := readFixture(t, fixture.file)

			mustPost(t, client, ingest.baseURL, fixture.source, fixture.header, body)

			ch := rabbittest.Channel(t, amqpURL)
			parked := names.ParkedQueue()
			waitUntil(t, arrivalTimeout, "one message in "+parked, func() bool {
				return rabbittest.MessageCount(t, ch, parked) == 1
			})
			// Stopping the processor returns unsettled deliveries to the
			// route queue, so the counts below are final.
			proc.stop(t)
			if n := int(calls.Load()); n != tt.wantCalls {
				t.Errorf("handler ran %d times, want %d", n, tt.wantCalls)
			}
			if n := rabbittest.MessageCount(t, ch, names.RouteQueue(routeName)); n != 0 {
				t.Errorf("route queue contains %d messages, want 0", n)
			}

			deliveries := rabbittest.Drain(t, ch, parked, 1, arrivalTimeout)
			if len(deliveries) != 1 {
				t.Fatalf("took %d messages from %s, want 1", len(deliveries), parked)
			}
			d := deliveries[0]
			if d.MessageId != fixture.id {
				t.Errorf("parked message id = %q, want %q", d.MessageId, fixture.id)
			}
			if !bytes.Equal(d.Body, body) {
				t.Errorf("parked body of %d bytes differs from the %d bytes of %s", len(d.Body), len(body), fixture.file)
			}
			wantHeaders := map[string]string{
				consume.HeaderParkedReason: tt.wantReason,
				consume.HeaderError:        errRejected.Error(),
				consume.HeaderRoute:        routeName,
				consume.HeaderRoutingKey:   contract.RoutingKey(fixture.source, fixture.eventType),
				consume.HeaderAttempts:     strconv.Itoa(tt.wantCalls),
			}
			for name, want := range wantHeaders {
				if got := fmt.Sprint(d.Headers[name]); got != want {
					t.Errorf("parked header %s = %q, want %q", name, got, want)
				}
			}

			msg, err := contract.Decode(&d)
			if err != nil {
				t.Fatalf("decode parked message: %v", err)
			}
			if msg.Source != fixture.source {
				t.Errorf("parked Source = %q, want %q", msg.Source, fixture.source)
			}
			if got, want := msg.Header.Get("Stripe-Signature"), fixture.header.Get("Stripe-Signature"); got != want {
				t.Errorf("parked header Stripe-Signature = %q, want %q", got, want)
			}
		})
	}
}

// stopAfterMarker posts a marker, waits until the handler received it, then
// stops the processor and returns how often the handler received each
// message id. After the processor stopped, rec.received is complete.
func stopAfterMarker(t *testing.T, client *http.Client, ingest *runningIngest, proc *runningProcessor, rec *recorder) map[string]int {
	t.Helper()
	markerID := postMarker(t, client, ingest.baseURL)
	rec.waitForID(t, markerID)
	proc.stop(t)
	rec.collect()
	return rec.countByID()
}
