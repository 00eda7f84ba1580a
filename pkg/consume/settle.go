package consume

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/topology"
)

// blockedPollInterval is how often publishCopy checks whether the broker
// unblocked the connection.
const blockedPollInterval = 250 * time.Millisecond

// moveTimeout bounds the wait for the broker's confirm of a copy that is
// being moved to a delay queue or the parking lot.
const moveTimeout = time.Minute

// result is the outcome of one handler call.
type result struct {
	err      error
	timedOut bool
	panicked bool
}

// handle runs the route's handler on one delivery and settles it: ack on
// success, a retry through a delay queue on a transient failure, the parking
// lot on a permanent failure or when the attempts are used up.
func (c *Consumer) handle(handlerCtx context.Context, route Route, d *amqp.Delivery) {
	attempt := attempts(d.Headers) + 1
	msg, err := contract.Decode(d)
	if err != nil {
		c.log.Error("message violates the contract, parking it", "route", route.Name, "message_id", d.MessageId, "routing_key", d.RoutingKey, "error", err)
		c.park(route, d, ReasonContractViolation, attempt, err)
		c.observe(route, OutcomeParked, 0)
		return
	}

	start := time.Now()
	res := c.call(handlerCtx, route, msg)
	elapsed := time.Since(start)
	if res.err == nil {
		if ackErr := d.Ack(false); ackErr != nil {
			c.log.Warn("ack failed, the message will be redelivered", "route", route.Name, "message_id", msg.ID, "error", ackErr)
		}
		c.observe(route, OutcomeAcked, elapsed)
		return
	}

	if handlerCtx.Err() != nil {
		// Shutdown cut the handler short, which tells nothing about the
		// message, so it goes back to the queue for another consumer.
		c.log.Warn("shutdown interrupted handler, requeueing", "route", route.Name, "message_id", msg.ID)
		if nackErr := d.Nack(false, true); nackErr != nil {
			c.log.Warn("requeue failed, the broker requeues the message when the channel closes", "route", route.Name, "message_id", msg.ID, "error", nackErr)
		}
		c.observe(route, OutcomeRequeued, elapsed)
		return
	}

	policy := c.retryPolicy(route)
	reason := ""
	switch {
	case res.panicked:
		reason = ReasonPanic
	case errors.Is(res.err, ErrPermanent):
		reason = ReasonPermanentError
	case attempt >= policy.maxAttempts() && res.timedOut:
		reason = ReasonTimeout
	case attempt >= policy.maxAttempts():
		reason = ReasonAttemptsExhausted
	}
	if reason != "" {
		c.log.Warn("handler failed, parking message", "route", route.Name, "message_id", msg.ID, "source", msg.Source, "event_type", msg.EventType, "attempt", attempt, "reason", reason, "error", res.err)
		c.park(route, d, reason, attempt, res.err)
		c.observe(route, OutcomeParked, elapsed)
		return
	}

	ttl := policy.TTL(attempt)
	c.log.Warn("handler failed, retrying later", "route", route.Name, "message_id", msg.ID, "source", msg.Source, "event_type", msg.EventType, "attempt", attempt, "max_attempts", policy.maxAttempts(), "retry_in", ttl, "error", res.err)
	c.retry(route, d, attempt, ttl, res.err)
	c.observe(route, OutcomeRetried, elapsed)
}

// call runs the handler with the handler timeout and turns a panic into an
// error.
func (c *Consumer) call(handlerCtx context.Context, route Route, msg *contract.Message) (res result) {
	ctx, cancel := context.WithTimeout(handlerCtx, c.opts.HandlerTimeout)
	defer cancel()
	defer func() {
		if p := recover(); p != nil {
			res = result{err: fmt.Errorf("handler panicked: %v", p), panicked: true}
		}
	}()

	err := route.Handler.Handle(ctx, msg)
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) && handlerCtx.Err() == nil {
		return result{err: fmt.Errorf("handler timed out after %s: %w", c.opts.HandlerTimeout, err), timedOut: true}
	}
	return result{err: err}
}

// retry moves d to the delay queue with the given TTL, from which the broker
// returns it to the route's queue when the TTL expires.
func (c *Consumer) retry(route Route, d *amqp.Delivery, attempt int, ttl time.Duration, cause error) {
	headers := failureHeaders(route, d, attempt, cause)
	headers[HeaderDelay] = topology.DelayHeaderValue(ttl)
	c.move(route, d, c.names.DelayExchange(), c.names.RouteQueue(route.Name), headers)
}

// park moves d to the parking lot with the reason and failure headers.
func (c *Consumer) park(route Route, d *amqp.Delivery, reason string, attempt int, cause error) {
	headers := failureHeaders(route, d, attempt, cause)
	headers[HeaderParkedReason] = reason
	headers[HeaderParkedAt] = time.Now().UTC().Format(time.RFC3339Nano)
	c.move(route, d, c.names.ParkedExchange(), d.RoutingKey, headers)
}

// move publishes a copy of d with the given headers, waits for the broker's
// confirm and only then acks d, so the message is in at least one queue at
// every moment; a crash between the two leaves both copies, a duplicate
// rather than a loss. When the copy cannot be published, move rejects d
// instead, and the route queue dead-letters it to the parking lot at least
// once, with the broker's x-death header but without the failure headers.
func (c *Consumer) move(route Route, d *amqp.Delivery, exchange, key string, headers amqp.Table) {
	msg := amqp.Publishing{
		Headers:         headers,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		Priority:        d.Priority,
		CorrelationId:   d.CorrelationId,
		ReplyTo:         d.ReplyTo,
		MessageId:       d.MessageId,
		Timestamp:       d.Timestamp,
		Type:            d.Type,
		AppId:           d.AppId,
		Body:            d.Body,
	}
	if msg.MessageId == "" {
		// The publisher matches returns by message id.
		msg.MessageId = fmt.Sprintf("%s-%d", route.Name, d.DeliveryTag)
	}

	ctx, cancel := context.WithTimeout(context.Background(), moveTimeout)
	defer cancel()
	err := c.publishCopy(ctx, exchange, key, msg)
	if err == nil {
		if ackErr := d.Ack(false); ackErr != nil {
			c.log.Warn("ack after moving the message failed, it will be redelivered and may be handled twice", "route", route.Name, "message_id", d.MessageId, "to", exchange, "error", ackErr)
		}
		return
	}

	c.log.Error("moving the message failed, rejecting it so that the broker dead-letters it to the parking lot", "route", route.Name, "message_id", d.MessageId, "to", exchange, "error", err)
	if rejectErr := d.Reject(false); rejectErr != nil {
		c.log.Warn("reject failed, the message will be redelivered", "route", route.Name, "message_id", d.MessageId, "error", rejectErr)
	}
}

// publishCopy publishes msg with a confirm. While the broker blocks the
// connection (a memory or disk alarm, usually brief), it waits and tries
// again until ctx is done, rather than parking a message that only needed a
// retry.
func (c *Consumer) publishCopy(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	for {
		err := c.publisher.Publish(ctx, exchange, key, msg)
		if !errors.Is(err, rabbit.ErrBlocked) {
			return err
		}
		if !sleepCtx(ctx, blockedPollInterval) {
			return err
		}
	}
}

// failureHeaders returns d's headers without the broker's dead-lettering
// headers and without the delay queue selector of an earlier retry, plus the
// failure headers of this attempt.
func failureHeaders(route Route, d *amqp.Delivery, attempt int, cause error) amqp.Table {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		// The broker's dead-lettering headers describe hops through
		// delay queues; the hookbus headers count attempts instead, and
		// RabbitMQ 4.x ignores these headers when a client sets them.
		if k == "x-death" || strings.HasPrefix(k, "x-first-death-") || strings.HasPrefix(k, "x-last-death-") {
			continue
		}
		// retry sets the selector again, and a parked message carries none.
		if k == HeaderDelay {
			continue
		}
		headers[k] = v
	}
	now := time.Now().UTC().Format(time.RFC3339Nano)
	if _, ok := headers[HeaderFirstFailedAt]; !ok {
		headers[HeaderFirstFailedAt] = now
	}
	if _, ok := headers[HeaderRoutingKey]; !ok {
		headers[HeaderRoutingKey] = d.RoutingKey
	}
	headers[HeaderLastFailedAt] = now
	headers[HeaderAttempts] = int32(attempt)
	headers[HeaderRoute] = route.Name
	headers[HeaderError] = truncate(cause.Error(), maxErrorLength)
	return headers
}

// attempts returns the hookbus-attempts header: the number of handler calls
// a message has had, 0 when the header is missing or not a number.
func attempts(headers amqp.Table) int {
	switch v := headers[HeaderAttempts].(type) {
	case int32:
		return int(v)
	case int64:
		return int(v)
	case int:
		return v
	case int16:
		return int(v)
	case int8:
		return int(v)
	case uint8:
		return int(v)
	}
	return 0
}

func (c *Consumer) observe(route Route, outcome Outcome, elapsed time.Duration) {
	if c.opts.Observe != nil {
		c.opts.Observe(route.Name, outcome, elapsed)
	}
}
