// Package topology names and declares the RabbitMQ exchanges and queues of
// one hookbus deployment. Every name derives from the deployment's namespace,
// so two deployments (or two test runs) on one broker never share an object:
//
//	<ns>.events          topic exchange that ingest publishes to
//	<ns>.unrouted        fanout exchange, alternate exchange of <ns>.events
//	<ns>.unrouted        quorum queue bound to the exchange of the same name
//	<ns>.parked          fanout exchange, dead-letter exchange of every route
//	<ns>.parked          quorum queue bound to the exchange of the same name
//	<ns>.route.<route>   quorum queue of one route, bound to <ns>.events
//
// Declarations are idempotent: ingest and processor both call Declare at
// start, with the same arguments, before they publish or consume.
package topology

import (
	"errors"
	"fmt"
	"regexp"

	amqp "github.com/rabbitmq/amqp091-go"
)

// DefaultNamespace is the namespace of a deployment that does not set one.
const DefaultNamespace = "webhooks"

// MaxQueueLength is the x-max-length of every queue hookbus declares. A full
// queue rejects new messages (x-overflow reject-publish), so publishers get a
// negative confirm instead of the broker dropping the oldest message.
const MaxQueueLength = 1_000_000

// DeliveryLimit is the x-delivery-limit of route queues: a message delivered
// this many times without an ack (for example because each attempt crashed
// the consumer) is dead-lettered to the parking lot. RabbitMQ 4.x applies a
// default of 20 to quorum queues; setting it makes 3.x behave the same.
const DeliveryLimit = 20

// InspectionDeliveryLimit is the x-delivery-limit of the unrouted queue and
// the parking lot. Operators look at their messages without removing them
// (processor dlq list, "Get messages" in the management UI), and every look
// returns the message to the queue, which RabbitMQ 4.0 to 4.2 count as a
// delivery against a default limit of 20 before dropping the message. A
// limit this high is never reached. It cannot be turned off instead: -1 is
// accepted by RabbitMQ 3.10 but drops a message on its first return.
const InspectionDeliveryLimit = 1_000_000

var (
	namespacePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$`)
	routePattern     = regexp.MustCompile(`^[a-z0-9_-]{1,64}$`)
)

// ErrInvalidName is wrapped by errors about an invalid namespace or route name.
var ErrInvalidName = errors.New("topology: invalid name")

// Names derives object names from a namespace. The zero value is not usable;
// get one from NewNames.
type Names struct {
	namespace string
}

// NewNames returns the names of the namespace, which must be 1 to 100
// characters of ASCII letters, digits, '_', '.' and '-', starting with a
// letter or digit.
func NewNames(namespace string) (Names, error) {
	if !namespacePattern.MatchString(namespace) {
		return Names{}, fmt.Errorf("%w: namespace %q must be 1 to 100 ASCII letters, digits, '_', '.' or '-', starting with a letter or digit", ErrInvalidName, namespace)
	}
	return Names{namespace: namespace}, nil
}

// ValidateRoute returns an error when name cannot be a route name: 1 to 64
// lowercase ASCII letters, digits, '-' or '_'.
func ValidateRoute(name string) error {
	if !routePattern.MatchString(name) {
		return fmt.Errorf("%w: route %q must be 1 to 64 lowercase ASCII letters, digits, '-' or '_'", ErrInvalidName, name)
	}
	return nil
}

// Namespace returns the namespace the names derive from.
func (n Names) Namespace() string { return n.namespace }

// Exchange returns the name of the topic exchange that ingest publishes to.
func (n Names) Exchange() string { return n.namespace + ".events" }

// UnroutedExchange returns the name of the alternate exchange of Exchange.
func (n Names) UnroutedExchange() string { return n.namespace + ".unrouted" }

// UnroutedQueue returns the name of the queue that keeps events no route
// binding matched.
func (n Names) UnroutedQueue() string { return n.namespace + ".unrouted" }

// ParkedExchange returns the name of the dead-letter exchange of the routes.
func (n Names) ParkedExchange() string { return n.namespace + ".parked" }

// ParkedQueue returns the name of the parking lot: the queue of messages that
// failed and wait for an operator.
func (n Names) ParkedQueue() string { return n.namespace + ".parked" }

// RouteQueue returns the name of the queue of the route.
func (n Names) RouteQueue(route string) string { return n.namespace + ".route." + route }

// Route is a named consumer of events: its queue receives every event whose
// routing key matches one of its topic binding patterns, for example
// "github.#" or "#.created".
type Route struct {
	Name     string
	Bindings []string
}

// Declare declares the exchanges and queues that ingest and processor share:
// the events exchange with its alternate exchange and unrouted queue, and the
// parking lot. It is idempotent. When an object exists with other arguments
// the broker closes ch and Declare returns an error that names the object and
// includes the broker's reason (which names the argument); IsPreconditionFailed
// reports such an error.
func Declare(ch *amqp.Channel, n Names) error {
	if err := declareFanout(ch, n.UnroutedExchange(), n.UnroutedQueue()); err != nil {
		return err
	}
	if err := declareFanout(ch, n.ParkedExchange(), n.ParkedQueue()); err != nil {
		return err
	}
	args := amqp.Table{"alternate-exchange": n.UnroutedExchange()}
	if err := ch.ExchangeDeclare(n.Exchange(), amqp.ExchangeTopic, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare exchange %q: %w", n.Exchange(), err)
	}
	return nil
}

// DeclareRoute declares the queue of the route and binds it to the events
// exchange with each of the route's patterns. The queue dead-letters to the
// parking lot at least once, so Declare must have run first. Bindings that the
// route no longer lists are not removed.
func DeclareRoute(ch *amqp.Channel, n Names, route Route) error {
	if err := ValidateRoute(route.Name); err != nil {
		return err
	}
	queue := n.RouteQueue(route.Name)
	args := quorumArgs()
	args["x-dead-letter-exchange"] = n.ParkedExchange()
	args["x-dead-letter-strategy"] = "at-least-once"
	args["x-delivery-limit"] = DeliveryLimit
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue %q: %w", queue, err)
	}
	for _, pattern := range route.Bindings {
		if err := ch.QueueBind(queue, pattern, n.Exchange(), false, nil); err != nil {
			return fmt.Errorf("bind queue %q to %q with %q: %w", queue, n.Exchange(), pattern, err)
		}
	}
	return nil
}

// Setup returns a function that declares the shared objects and the given
// routes on a new channel of conn, for rabbit.Config.Setup.
func Setup(n Names, routes ...Route) func(conn *amqp.Connection) error {
	return func(conn *amqp.Connection) error {
		ch, err := conn.Channel()
		if err != nil {
			return fmt.Errorf("open channel: %w", err)
		}
		if err := Declare(ch, n); err != nil {
			return err
		}
		for _, r := range routes {
			if err := DeclareRoute(ch, n, r); err != nil {
				return err
			}
		}
		if err := ch.Close(); err != nil {
			return fmt.Errorf("close channel: %w", err)
		}
		return nil
	}
}

// Delete deletes every object of the namespace that Declare and DeclareRoute
// create for the given routes, including their messages. Objects that do not
// exist are skipped. Tests use it to clean up; it is not part of normal
// operation.
func Delete(ch *amqp.Channel, n Names, routes ...string) error {
	var errs []error
	for _, route := range routes {
		if _, err := ch.QueueDelete(n.RouteQueue(route), false, false, false); err != nil {
			errs = append(errs, fmt.Errorf("delete queue %q: %w", n.RouteQueue(route), err))
		}
	}
	for _, queue := range []string{n.UnroutedQueue(), n.ParkedQueue()} {
		if _, err := ch.QueueDelete(queue, false, false, false); err != nil {
			errs = append(errs, fmt.Errorf("delete queue %q: %w", queue, err))
		}
	}
	for _, exchange := range []string{n.Exchange(), n.UnroutedExchange(), n.ParkedExchange()} {
		if err := ch.ExchangeDelete(exchange, false, false); err != nil {
			errs = append(errs, fmt.Errorf("delete exchange %q: %w", exchange, err))
		}
	}
	return errors.Join(errs...)
}

// IsPreconditionFailed reports whether err is the broker's 406
// PRECONDITION_FAILED, which it sends when an object is declared with
// arguments that differ from the existing object's. Retrying cannot fix it:
// an operator must delete the object or change the configuration.
func IsPreconditionFailed(err error) bool {
	var amqpErr *amqp.Error
	return errors.As(err, &amqpErr) && amqpErr.Code == amqp.PreconditionFailed
}

func declareFanout(ch *amqp.Channel, exchange, queue string) error {
	if err := ch.ExchangeDeclare(exchange, amqp.ExchangeFanout, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", exchange, err)
	}
	args := quorumArgs()
	args["x-delivery-limit"] = InspectionDeliveryLimit
	if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
		return fmt.Errorf("declare queue %q: %w", queue, err)
	}
	if err := ch.QueueBind(queue, "", exchange, false, nil); err != nil {
		return fmt.Errorf("bind queue %q to %q: %w", queue, exchange, err)
	}
	return nil
}

func quorumArgs() amqp.Table {
	return amqp.Table{
		"x-queue-type": amqp.QueueTypeQuorum,
		"x-max-length": MaxQueueLength,
		"x-overflow":   "reject-publish",
	}
}
