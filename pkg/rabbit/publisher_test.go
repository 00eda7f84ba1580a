package rabbit_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/rabbittest"
)

// publishTimeout bounds each Publish call of the tests.
const publishTimeout = 30 * time.Second

func publish(env *publishEnv, exchange, key string, msg amqp.Publishing) error {
	ctx, cancel := context.WithTimeout(context.Background(), publishTimeout)
	defer cancel()
	return env.publisher.Publish(ctx, exchange, key, msg)
}

// declareTestObjects declares an exchange and, when queueArgs is not nil, a
// queue bound to it with "#", both named after the test namespace, and
// deletes them when the test ends.
func declareTestObjects(t *testing.T, env *publishEnv, suffix string, queueArgs amqp.Table) (exchange, queue string) {
	t.Helper()
	exchange = env.names.Namespace() + "." + suffix
	if err := env.ch.ExchangeDeclare(exchange, amqp.ExchangeTopic, false, false, false, false, nil); err != nil {
		t.Fatalf("declare exchange %s: %v", exchange, err)
	}
	t.Cleanup(func() {
		ch := rabbittest.Channel(t, env.url)
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			t.Errorf("delete exchange %s: %v", exchange, err)
		}
		if queue == "" {
			return
		}
		if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
			t.Errorf("delete queue %s: %v", queue, err)
		}
	})
	if queueArgs == nil {
		return exchange, ""
	}

	queue = exchange
	if _, err := env.ch.QueueDeclare(queue, false, false, false, false, queueArgs); err != nil {
		t.Fatalf("declare queue %s: %v", queue, err)
	}
	if err := env.ch.QueueBind(queue, "#", exchange, false, nil); err != nil {
		t.Fatalf("bind queue %s: %v", queue, err)
	}
	return exchange, queue
}

func TestPublishConfirmed(t *testing.T) {
	env := startPublishEnv(t, 2)
	msg := message("confirmed-1")

	if err := publish(env, env.names.Exchange(), "github.push", msg); err != nil {
		t.Fatalf("Publish = %v, want nil", err)
	}

	got := rabbittest.Drain(t, env.ch, env.names.RouteQueue("all"), 1, 10*time.Second)
	if len(got) != 1 {
		t.Fatalf("route queue has %d messages, want 1", len(got))
	}
	if got[0].MessageId != msg.MessageId {
		t.Errorf("message id = %q, want %q", got[0].MessageId, msg.MessageId)
	}
	if string(got[0].Body) != string(msg.Body) {
		t.Errorf("body = %q, want %q", got[0].Body, msg.Body)
	}
	if got[0].RoutingKey != "github.push" {
		t.Errorf("routing key = %q, want github.push", got[0].RoutingKey)
	}
}

func TestPublishWithoutRun(t *testing.T) {
	client := rabbit.NewClient(rabbit.Config{URL: "amqp://127.0.0.1:1/", Logger: testLogger(t)})
	publisher := rabbit.NewPublisher(client, 2, testLogger(t))

	if publisher.Ready() {
		t.Error("Ready() = true before Run")
	}
	err := publisher.Publish(context.Background(), "webhooks.events", "github.push", message("not-running"))
	if !errors.Is(err, rabbit.ErrNotConnected) {
		t.Errorf("Publish before Run = %v, want ErrNotConnected", err)
	}
}

func TestPublishUnroutableReturned(t *testing.T) {
	env := startPublishEnv(t, 1)
	// A topic exchange without bindings and without an alternate
	// exchange routes no message anywhere.
	exchange, _ := declareTestObjects(t, env, "plain", nil)

	err := publish(env, exchange, "github.push", message("unroutable-1"))
	if !errors.Is(err, rabbit.ErrReturned) {
		t.Fatalf("Publish to an exchange without bindings = %v, want ErrReturned", err)
	}

	// The return must not leak into later publishes on the channel.
	if err := publish(env, env.names.Exchange(), "github.push", message("routable-1")); err != nil {
		t.Errorf("Publish after a returned message = %v, want nil", err)
	}
}

func TestPublishUnmatchedKeyGoesToUnrouted(t *testing.T) {
	env := startPublishEnv(t, 1)
	// The alternate exchange takes what no route binding matches, so the
	// broker does not return the message.
	ch := rabbittest.Channel(t, env.url)
	if err := ch.QueueUnbind(env.names.RouteQueue("all"), "#", env.names.Exchange(), nil); err != nil {
		t.Fatalf("unbind route queue: %v", err)
	}

	if err := publish(env, env.names.Exchange(), "github.push", message("unmatched-1")); err != nil {
		t.Fatalf("Publish with no matching binding = %v, want nil", err)
	}
	got := rabbittest.Drain(t, ch, env.names.UnroutedQueue(), 1, 10*time.Second)
	if len(got) != 1 || got[0].MessageId != "unmatched-1" {
		t.Errorf("unrouted queue has %d messages, want unmatched-1", len(got))
	}
}

func TestPublishFullQueueNacked(t *testing.T) {
	env := startPublishEnv(t, 1)
	exchange, queue := declareTestObjects(t, env, "full", amqp.Table{
		"x-max-length": 1,
		"x-overflow":   "reject-publish",
	})

	if err := publish(env, exchange, "github.push", message("fits-1")); err != nil {
		t.Fatalf("first Publish = %v, want nil", err)
	}
	err := publish(env, exchange, "github.push", message("overflows-2"))
	if !errors.Is(err, rabbit.ErrNacked) {
		t.Fatalf("Publish into a full queue = %v, want ErrNacked", err)
	}
	if n := rabbittest.MessageCount(t, env.ch, queue); n != 1 {
		t.Errorf("queue %s has %d messages, want 1", queue, n)
	}
}

func TestPublishChannelClosed(t *testing.T) {
	env := startPublishEnv(t, 1)
	// The broker closes the channel with 404 NOT_FOUND instead of
	// confirming a message to an exchange that does not exist.
	missing := env.names.Namespace() + ".missing"

	err := publish(env, missing, "github.push", message("closes-channel"))
	if !errors.Is(err, rabbit.ErrChannelClosed) {
		t.Fatalf("Publish to a missing exchange = %v, want ErrChannelClosed", err)
	}

	waitFor(t, "the publisher has reopened its channel", env.publisher.Ready)
	if err := publish(env, env.names.Exchange(), "github.push", message("after-close")); err != nil {
		t.Errorf("Publish after the channel was reopened = %v, want nil", err)
	}
}

func TestPublishConcurrent(t *testing.T) {
	const total = 2000
	env := startPublishEnv(t, 4)

	errs := make(chan error, total)
	var wg sync.WaitGroup
	for i := range total {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("concurrent-%04d", i)
			if err := publish(env, env.names.Exchange(), "load.test", message(id)); err != nil {
				errs <- fmt.Errorf("publish %s: %w", id, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	failed := 0
	for err := range errs {
		if failed < 5 {
			t.Error(err)
		}
		failed++
	}
	if failed > 0 {
		t.Fatalf("%d of %d publishes failed", failed, total)
	}

	got := rabbittest.Drain(t, env.ch, env.names.RouteQueue("all"), total, 60*time.Second)
	ids := map[string]bool{}
	for _, d := range got {
		ids[d.MessageId] = true
	}
	if len(got) != total {
		t.Errorf("route queue had %d messages, want %d", len(got), total)
	}
	if len(ids) != total {
		t.Errorf("route queue had %d distinct ids, want %d", len(ids), total)
	}
	for i := range total {
		if id := fmt.Sprintf("concurrent-%04d", i); !ids[id] {
			t.Errorf("message %s is missing", id)
			break
		}
	}
	if n := rabbittest.MessageCount(t, env.ch, env.names.RouteQueue("all")); n != 0 {
		t.Errorf("route queue has %d messages more than were published", n)
	}
}

func TestPublishDoneContext(t *testing.T) {
	env := startPublishEnv(t, 1)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelExpired()

	tests := []struct {
		name  string
		ctx   context.Context
		cause error
	}{
		{"cancelled", cancelled, context.Canceled},
		{"expired", expired, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() {
				done <- env.publisher.Publish(tc.ctx, env.names.Exchange(), "github.push", message("done-"+tc.name))
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(publishTimeout):
				t.Fatalf("Publish with a done context did not return within %s", publishTimeout)
			}

			if !errors.Is(err, rabbit.ErrConfirmTimeout) {
				t.Errorf("Publish = %v, want an error wrapping ErrConfirmTimeout", err)
			}
			if !errors.Is(err, tc.cause) {
				t.Errorf("Publish = %v, want an error wrapping %v", err, tc.cause)
			}
		})
	}

	// The failed publishes must leave the channel usable.
	if err := publish(env, env.names.Exchange(), "github.push", message("after-done")); err != nil {
		t.Errorf("Publish after publishes with done contexts = %v, want nil", err)
	}
}

// TestPublishAfterClientRestart closes the client's connection by stopping
// the client, and checks that the publisher fails fast while there is no
// connection and publishes again once the client runs again.
func TestPublishAfterClientRestart(t *testing.T) {
	env := startPublishEnv(t, 2)
	if err := publish(env, env.names.Exchange(), "github.push", message("before-restart")); err != nil {
		t.Fatalf("Publish before the restart = %v, want nil", err)
	}

	if err := env.stop(); err != nil {
		t.Fatalf("client Run = %v, want nil", err)
	}
	waitFor(t, "the publisher is not ready", func() bool { return !env.publisher.Ready() })
	err := publish(env, env.names.Exchange(), "github.push", message("during-restart"))
	if !errors.Is(err, rabbit.ErrNotConnected) {
		t.Errorf("Publish without a connection = %v, want ErrNotConnected", err)
	}

	background(t, env.client.Run)
	waitFor(t, "the publisher is ready again", env.publisher.Ready)
	if err := publish(env, env.names.Exchange(), "github.push", message("after-restart")); err != nil {
		t.Fatalf("Publish after the restart = %v, want nil", err)
	}

	got := rabbittest.Drain(t, env.ch, env.names.RouteQueue("all"), 2, 10*time.Second)
	var ids []string
	for _, d := range got {
		ids = append(ids, d.MessageId)
	}
	if len(ids) != 2 || ids[0] != "before-restart" || ids[1] != "after-restart" {
		t.Errorf("route queue has %q, want [before-restart after-restart]", ids)
	}
}
