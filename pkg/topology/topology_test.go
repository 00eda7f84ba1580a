package topology_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

func TestNewNames(t *testing.T) {
	valid := []string{"webhooks", "a", "prod.eu-1", "Team_A", "0start", strings.Repeat("n", 100)}
	for _, ns := range valid {
		if _, err := topology.NewNames(ns); err != nil {
			t.Errorf("NewNames(%q) = %v, want nil", ns, err)
		}
	}
	invalid := []string{"", ".hidden", "-dash", "_under", "a/b", "a b", "a#", "ñ", strings.Repeat("n", 101)}
	for _, ns := range invalid {
		if _, err := topology.NewNames(ns); !errors.Is(err, topology.ErrInvalidName) {
			t.Errorf("NewNames(%q) = %v, want an error wrapping ErrInvalidName", ns, err)
		}
	}
}

func TestNamesDeriveFromNamespace(t *testing.T) {
	names, err := topology.NewNames("prod")
	if err != nil {
		t.Fatalf("NewNames: %v", err)
	}
	tests := []struct {
		what, got, want string
	}{
		{"Namespace", names.Namespace(), "prod"},
		{"Exchange", names.Exchange(), "prod.events"},
		{"UnroutedExchange", names.UnroutedExchange(), "prod.unrouted"},
		{"UnroutedQueue", names.UnroutedQueue(), "prod.unrouted"},
		{"ParkedExchange", names.ParkedExchange(), "prod.parked"},
		{"ParkedQueue", names.ParkedQueue(), "prod.parked"},
		{"RouteQueue", names.RouteQueue("billing"), "prod.route.billing"},
	}
	for _, tc := range tests {
		if tc.got != tc.want {
			t.Errorf("%s() = %q, want %q", tc.what, tc.got, tc.want)
		}
	}
}

func TestValidateRoute(t *testing.T) {
	valid := []string{"a", "billing", "github-audit", "route_2", strings.Repeat("r", 64)}
	for _, name := range valid {
		if err := topology.ValidateRoute(name); err != nil {
			t.Errorf("ValidateRoute(%q) = %v, want nil", name, err)
		}
	}
	invalid := []string{"", "Billing", "a.b", "a/b", "a b", strings.Repeat("r", 65)}
	for _, name := range invalid {
		if err := topology.ValidateRoute(name); !errors.Is(err, topology.ErrInvalidName) {
			t.Errorf("ValidateRoute(%q) = %v, want an error wrapping ErrInvalidName", name, err)
		}
	}
}

// dial opens a connection that the test closes when it ends.
func dial(t *testing.T, url string) *amqp.Connection {
	t.Helper()
	conn, err := amqp.Dial(url)
	if err != nil {
		t.Fatalf("dial broker: %v", err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

func channel(t *testing.T, conn *amqp.Connection) *amqp.Channel {
	t.Helper()
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	return ch
}

// publish publishes a message with the routing key in confirm mode and
// fails the test unless the broker acks it.
func publish(t *testing.T, ch *amqp.Channel, exchange, key string) {
	t.Helper()
	if err := ch.Confirm(false); err != nil {
		t.Fatalf("enable confirms: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	confirm, err := ch.PublishWithDeferredConfirmWithContext(ctx, exchange, key, false, false, amqp.Publishing{
		MessageId: key,
		Body:      []byte(key),
	})
	if err != nil {
		t.Fatalf("publish %s: %v", key, err)
	}
	acked, err := confirm.WaitContext(ctx)
	if err != nil {
		t.Fatalf("wait for confirm of %s: %v", key, err)
	}
	if !acked {
		t.Fatalf("broker nacked %s", key)
	}
}

// object is an exchange or queue of a namespace.
type object struct {
	queue bool
	name  string
}

func namespaceObjects(names topology.Names, routes ...string) []object {
	objects := []object{
		{false, names.Exchange()},
		{false, names.UnroutedExchange()},
		{false, names.ParkedExchange()},
		{true, names.UnroutedQueue()},
		{true, names.ParkedQueue()},
	}
	for _, r := range routes {
		objects = append(objects, object{true, names.RouteQueue(r)})
	}
	return objects
}

// declarePassive checks that the object exists, on a channel of its own
// because the broker closes the channel when it does not.
func declarePassive(t *testing.T, conn *amqp.Connection, o object) error {
	t.Helper()
	ch := channel(t, conn)
	defer ch.Close()
	if o.queue {
		_, err := ch.QueueDeclarePassive(o.name, true, false, false, false, nil)
		return err
	}
	return ch.ExchangeDeclarePassive(o.name, amqp.ExchangeTopic, true, false, false, false, nil)
}

func TestDeclareIsIdempotent(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, "orders")
	conn := dial(t, url)
	ch := channel(t, conn)
	route := topology.Route{Name: "orders", Bindings: []string{"shopify.orders.#"}}

	for i := range 2 {
		if err := topology.Declare(ch, names); err != nil {
			t.Fatalf("Declare, call %d: %v", i+1, err)
		}
		if err := topology.DeclareRoute(ch, names, route); err != nil {
			t.Fatalf("DeclareRoute, call %d: %v", i+1, err)
		}
	}

	for _, o := range namespaceObjects(names, "orders") {
		if err := declarePassive(t, conn, o); err != nil {
			t.Errorf("%s does not exist after Declare: %v", o.name, err)
		}
	}
}

func TestDeclareRouteBindsPatterns(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, "orders")
	conn := dial(t, url)
	ch := channel(t, conn)
	if err := topology.Declare(ch, names); err != nil {
		t.Fatalf("Declare: %v", err)
	}
	route := topology.Route{Name: "orders", Bindings: []string{"shopify.orders.#", "stripe.invoice.*"}}
	if err := topology.DeclareRoute(ch, names, route); err != nil {
		t.Fatalf("DeclareRoute: %v", err)
	}

	routed := []string{"shopify.orders.create", "shopify.orders.paid", "stripe.invoice.paid"}
	unrouted := []string{"github.push", "stripe.invoice.payment.failed", "shopify.products.create"}
	for _, key := range append(append([]string{}, routed...), unrouted...) {
		publish(t, ch, names.Exchange(), key)
	}

	assertKeys(t, ch, names.RouteQueue("orders"), routed)
	assertKeys(t, ch, names.UnroutedQueue(), unrouted)
}

// assertKeys takes the messages from queue and checks that they have
// exactly the routing keys, in order. The publishes were confirmed, so every
// message is in its queue already.
func assertKeys(t *testing.T, ch *amqp.Channel, queue string, want []string) {
	t.Helper()
	got := rabbittest.Drain(t, ch, queue, len(want), 10*time.Second)
	if n := rabbittest.MessageCount(t, ch, queue); n != 0 {
		t.Errorf("queue %s has %d messages more than expected", queue, n)
	}
	keys := make([]string, len(got))
	for i, d := range got {
		keys[i] = d.RoutingKey
	}
	if strings.Join(keys, " ") != strings.Join(want, " ") {
		t.Errorf("queue %s has routing keys %q, want %q", queue, keys, want)
	}
}

func TestRouteQueueDeadLettersToParked(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, "orders")
	conn := dial(t, url)
	ch := channel(t, conn)
	if err := topology.Setup(names, topology.Route{Name: "orders", Bindings: []string{"#"}})(conn); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	publish(t, ch, names.Exchange(), "shopify.orders.create")

	got := drainUnacked(t, ch, names.RouteQueue("orders"))
	if err := got.Reject(false); err != nil {
		t.Fatalf("reject: %v", err)
	}

	parked := rabbittest.Drain(t, ch, names.ParkedQueue(), 1, 10*time.Second)
	if len(parked) != 1 {
		t.Fatalf("parked queue has %d messages, want the rejected one", len(parked))
	}
	if parked[0].MessageId != "shopify.orders.create" {
		t.Errorf("parked message id = %q, want shopify.orders.create", parked[0].MessageId)
	}
	if _, ok := parked[0].Headers["x-death"]; !ok {
		t.Errorf("parked message has no x-death header: %v", parked[0].Headers)
	}
}

// drainUnacked gets one message from queue without acking it, polling until
// one arrives or 10 seconds pass.
func drainUnacked(t *testing.T, ch *amqp.Channel, queue string) amqp.Delivery {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		d, ok, err := ch.Get(queue, false)
		if err != nil {
			t.Fatalf("get from %s: %v", queue, err)
		}
		if ok {
			return d
		}
		time.Sleep(20 * time.Millisecond) // polling interval: basic.get has no wait
	}
	t.Fatalf("no message arrived in %s", queue)
	return amqp.Delivery{}
}

func TestDeclareRejectsDifferentArguments(t *testing.T) {
	url := rabbittest.URL(t)
	tests := []struct {
		name     string
		queue    func(names topology.Names) string
		args     func(names topology.Names) amqp.Table
		declare  func(ch *amqp.Channel, names topology.Names) error
		argument string
	}{
		{
			name:  "route queue with another max length",
			queue: func(n topology.Names) string { return n.RouteQueue("orders") },
			// Every argument but x-max-length is the one DeclareRoute
			// sends, because the broker names only the first difference.
			args: func(n topology.Names) amqp.Table {
				return amqp.Table{
					"x-queue-type":           amqp.QueueTypeQuorum,
					"x-max-length":           10,
					"x-overflow":             "reject-publish",
					"x-dead-letter-exchange": n.ParkedExchange(),
					"x-dead-letter-strategy": "at-least-once",
					"x-delivery-limit":       topology.DeliveryLimit,
				}
			},
			declare: func(ch *amqp.Channel, n topology.Names) error {
				return topology.DeclareRoute(ch, n, topology.Route{Name: "orders", Bindings: []string{"#"}})
			},
			argument: "x-max-length",
		},
		{
			name:  "classic unrouted queue",
			queue: func(n topology.Names) string { return n.UnroutedQueue() },
			args: func(topology.Names) amqp.Table {
				return amqp.Table{
					"x-queue-type": amqp.QueueTypeClassic,
					"x-max-length": topology.MaxQueueLength,
					"x-overflow":   "reject-publish",
				}
			},
			declare:  topology.Declare,
			argument: "x-queue-type",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			names := rabbittest.Namespace(t, url, "orders")
			conn := dial(t, url)
			queue := tc.queue(names)
			if _, err := channel(t, conn).QueueDeclare(queue, true, false, false, false, tc.args(names)); err != nil {
				t.Fatalf("declare %s beforehand: %v", queue, err)
			}

			err := tc.declare(channel(t, conn), names)
			if err == nil {
				t.Fatalf("declare returned nil, want an error about %s", tc.argument)
			}
			if !strings.Contains(err.Error(), queue) {
				t.Errorf("error %q does not name the queue %s", err, queue)
			}
			if !strings.Contains(err.Error(), tc.argument) {
				t.Errorf("error %q does not name the argument %s", err, tc.argument)
			}
			if !topology.IsPreconditionFailed(err) {
				t.Errorf("IsPreconditionFailed(%v) = false, want true", err)
			}
		})
	}
}

func TestIsPreconditionFailed(t *testing.T) {
	if topology.IsPreconditionFailed(errors.New("PRECONDITION_FAILED")) {
		t.Error("IsPreconditionFailed is true for an error that is not an *amqp.Error")
	}
	if topology.IsPreconditionFailed(&amqp.Error{Code: amqp.NotFound}) {
		t.Error("IsPreconditionFailed is true for 404 NOT_FOUND")
	}
	if topology.IsPreconditionFailed(nil) {
		t.Error("IsPreconditionFailed is true for nil")
	}
}

func TestDeleteRemovesNamespace(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, "orders", "audit")
	conn := dial(t, url)
	ch := channel(t, conn)
	routes := []topology.Route{
		{Name: "orders", Bindings: []string{"shopify.#"}},
		{Name: "audit", Bindings: []string{"#"}},
	}
	if err := topology.Setup(names, routes...)(conn); err != nil {
		t.Fatalf("Setup: %v", err)
	}
	publish(t, ch, names.Exchange(), "shopify.orders.create")
	publish(t, ch, names.Exchange(), "unrouted.event")

	if err := topology.Delete(ch, names, "orders", "audit"); err != nil {
		t.Fatalf("Delete: %v", err)
	}

	for _, o := range namespaceObjects(names, "orders", "audit") {
		err := declarePassive(t, conn, o)
		var amqpErr *amqp.Error
		if !errors.As(err, &amqpErr) || amqpErr.Code != amqp.NotFound {
			t.Errorf("passive declare of %s after Delete = %v, want 404 NOT_FOUND", o.name, err)
		}
	}
}

func TestDeleteSkipsMissingObjects(t *testing.T) {
	url := rabbittest.URL(t)
	names := rabbittest.Namespace(t, url, "never-declared")
	conn := dial(t, url)

	if err := topology.Delete(channel(t, conn), names, "never-declared"); err != nil {
		t.Errorf("Delete of a namespace that was never declared = %v, want nil", err)
	}
}
