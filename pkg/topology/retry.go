package topology

import (
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// HeaderDelay is the header that selects a delay queue: the queue's TTL in
// milliseconds, as a decimal string.
const HeaderDelay = "hookbus-delay"

// RetrySchedule is the wait before each retry of a failed message. A
// message waits in the broker, in a delay queue whose queue-wide TTL is the
// delay; when the TTL expires the broker dead-letters it back to its route
// queue. Every message in one delay queue has the same TTL, so messages
// expire in order and no long delay holds back a shorter one.
//
// Jitter spreads retries of messages that failed together: each delay d has
// three queues, with TTLs d×(1−Jitter), d and d×(1+Jitter), and a retry goes
// to one of them at random.
type RetrySchedule struct {
	// Delays[i] is the wait after the (i+1)th failed attempt. Attempts
	// beyond the list wait as long as the last entry.
	Delays []time.Duration
	// Jitter is a fraction between 0 and 0.5.
	Jitter float64
}

// MaxRetryDelay is the longest retry delay. RabbitMQ takes an x-message-ttl
// of at most 2^32-1 milliseconds (about 49.7 days), and a jitter of up to 50%
// is added on top.
const MaxRetryDelay = 30 * 24 * time.Hour

// DefaultRetrySchedule waits 10 seconds, 1 minute, 10 minutes, 1 hour and 6
// hours, each within ±20%.
var DefaultRetrySchedule = RetrySchedule{
	Delays: []time.Duration{10 * time.Second, time.Minute, 10 * time.Minute, time.Hour, 6 * time.Hour},
	Jitter: 0.2,
}

// Validate returns an error when the schedule has no delays, a delay under
// one millisecond, or a jitter outside [0, 0.5].
func (s RetrySchedule) Validate() error {
	if len(s.Delays) == 0 {
		return fmt.Errorf("topology: retry schedule has no delays")
	}
	for _, d := range s.Delays {
		if d < time.Millisecond {
			return fmt.Errorf("topology: retry delay %s is under 1ms", d)
		}
		if d > MaxRetryDelay {
			return fmt.Errorf("topology: retry delay %s is over the maximum of %s", d, MaxRetryDelay)
		}
	}
	if s.Jitter < 0 || s.Jitter > 0.5 {
		return fmt.Errorf("topology: retry jitter %g is outside [0, 0.5]", s.Jitter)
	}
	return nil
}

// TTLs returns the TTLs of the delay queues the schedule uses, sorted and
// without duplicates.
func (s RetrySchedule) TTLs() []time.Duration {
	var ttls []time.Duration
	for _, d := range s.Delays {
		ttls = append(ttls, s.buckets(d)...)
	}
	slices.Sort(ttls)
	return slices.Compact(ttls)
}

// TTL returns the TTL of the delay queue for a retry after the given number
// of failed attempts (1 for the first failure), picking one of the jitter
// buckets at random.
func (s RetrySchedule) TTL(failures int) time.Duration {
	i := min(max(failures, 1), len(s.Delays)) - 1
	buckets := s.buckets(s.Delays[i])
	return buckets[rand.N(len(buckets))]
}

func (s RetrySchedule) buckets(d time.Duration) []time.Duration {
	round := func(f float64) time.Duration {
		return max(time.Duration(f).Round(time.Millisecond), time.Millisecond)
	}
	if s.Jitter == 0 {
		return []time.Duration{round(float64(d))}
	}
	return []time.Duration{
		round(float64(d) * (1 - s.Jitter)),
		round(float64(d)),
		round(float64(d) * (1 + s.Jitter)),
	}
}

// DelayExchange returns the name of the headers exchange that routes a
// retry to its delay queue by the HeaderDelay header.
func (n Names) DelayExchange() string { return n.namespace + ".delay" }

// DelayQueue returns the name of the delay queue with the given TTL, for
// example "webhooks.delay.10000ms".
func (n Names) DelayQueue(ttl time.Duration) string {
	return n.namespace + ".delay." + strconv.FormatInt(ttl.Milliseconds(), 10) + "ms"
}

// DelayHeaderValue returns the HeaderDelay value that selects the delay
// queue with the given TTL.
func DelayHeaderValue(ttl time.Duration) string {
	return strconv.FormatInt(ttl.Milliseconds(), 10)
}

// DeclareDelays declares the delay exchange and the delay queues of the
// schedule. A message published to the delay exchange with HeaderDelay set
// and with a route queue's name as routing key waits for the TTL and then
// goes, by dead-lettering through the default exchange, to that route queue
// only. The dead-lettering is at least once.
func DeclareDelays(ch *amqp.Channel, n Names, schedule RetrySchedule) error {
	if err := schedule.Validate(); err != nil {
		return err
	}
	if err := ch.ExchangeDeclare(n.DelayExchange(), amqp.ExchangeHeaders, true, false, false, false, nil); err != nil {
		return fmt.Errorf("declare exchange %q: %w", n.DelayExchange(), err)
	}
	for _, ttl := range schedule.TTLs() {
		queue := n.DelayQueue(ttl)
		args := quorumArgs()
		args["x-message-ttl"] = ttl.Milliseconds()
		args["x-dead-letter-exchange"] = ""
		args["x-dead-letter-strategy"] = "at-least-once"
		if _, err := ch.QueueDeclare(queue, true, false, false, false, args); err != nil {
			return fmt.Errorf("declare queue %q: %w", queue, err)
		}
		binding := amqp.Table{"x-match": "all", HeaderDelay: DelayHeaderValue(ttl)}
		if err := ch.QueueBind(queue, "", n.DelayExchange(), false, binding); err != nil {
			return fmt.Errorf("bind queue %q to %q: %w", queue, n.DelayExchange(), err)
		}
	}
	return nil
}

// DeleteDelays deletes the delay queues of the schedules and the delay
// exchange, including their messages. Tests use it to clean up.
func DeleteDelays(ch *amqp.Channel, n Names, schedules ...RetrySchedule) error {
	for _, s := range schedules {
		for _, ttl := range s.TTLs() {
			if _, err := ch.QueueDelete(n.DelayQueue(ttl), false, false, false); err != nil {
				return fmt.Errorf("delete queue %q: %w", n.DelayQueue(ttl), err)
			}
		}
	}
	if err := ch.ExchangeDelete(n.DelayExchange(), false, false); err != nil {
		return fmt.Errorf("delete exchange %q: %w", n.DelayExchange(), err)
	}
	return nil
}
