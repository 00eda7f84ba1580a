package dlq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/topology"
)

// replayOptions configures replay.
type replayOptions struct {
	// limit is the maximum number of matching messages, 0 for no limit.
	limit int
	// dryRun reads and returns to the queue every message, and records
	// the matching ones in replayResult.planned.
	dryRun bool
	// progress, when set, is called after each message read.
	progress func(read, ready, replayed int)
	// afterConfirm, when set, is called after the broker confirmed the
	// copy of the nth replayed message and before the original is acked.
	afterConfirm func(n int)
}

// replayResult counts what a replay did. A message that matched is either
// replayed, planned (dry run), skipped or failed.
type replayResult struct {
	queue    string
	ready    int // messages ready in the queue at the start
	read     int
	matched  int
	replayed int
	planned  []plannedReplay  // dry run only
	skipped  []messageProblem // matched, but no destination is known
	failed   []messageProblem // the broker returned or rejected the copy
}

// plannedReplay is a message that a dry run would replay, with the exchange
// and routing key its copy would be published to.
type plannedReplay struct {
	entry    entry
	exchange string
	key      string
}

// messageProblem is a matching message that stays in the queue, with the
// reason.
type messageProblem struct {
	id  string
	err error
}

// errNoDestination is wrapped by the reason of a skipped message.
var errNoDestination = errors.New("dlq: no destination for the message")

// replay publishes a copy of every matching message of the queue of kind
// and acks each original after the broker confirmed its copy. A parked
// message goes to its route's queue through the default exchange, an
// unrouted message to the events exchange with its routing key. It stops
// with ctx's error when ctx is done; the result counts what was done before.
func replay(ctx context.Context, conn *amqp.Connection, names topology.Names, kind queueKind, f filter, opts replayOptions) (replayResult, error) {
	res := replayResult{queue: kind.name(names)}
	rd, err := openReader(conn, res.queue)
	if err != nil {
		return res, err
	}
	res.ready = rd.ready

	var pub *confirmPublisher
	if !opts.dryRun {
		if pub, err = openConfirmPublisher(conn); err != nil {
			return res, errors.Join(err, rd.close())
		}
	}

	err = replayMessages(ctx, rd, pub, names, kind, f, opts, &res)
	if pub != nil {
		err = errors.Join(err, pub.close())
	}
	return res, errors.Join(err, rd.close())
}

// replayMessages is the loop of replay. pub is nil in a dry run.
func replayMessages(ctx context.Context, rd *reader, pub *confirmPublisher, names topology.Names, kind queueKind, f filter, opts replayOptions, res *replayResult) error {
	now := time.Now()
	for opts.limit == 0 || res.matched < opts.limit {
		d, err := rd.next(ctx)
		if err != nil || d == nil {
			return err
		}
		res.read = rd.read
		e := newEntry(d, kind, names, now)
		if !f.match(e) {
			opts.reportProgress(res)
			continue
		}
		res.matched++

		exchange, key, err := destination(d, e, kind, names)
		switch {
		case err != nil:
			res.skipped = append(res.skipped, messageProblem{id: e.ID, err: err})
		case pub == nil:
			res.planned = append(res.planned, plannedReplay{entry: e, exchange: exchange, key: key})
		default:
			msg := replayCopy(d, e, kind)
			if err := replayOne(ctx, pub, d, msg, exchange, key, opts, res); err != nil {
				return err
			}
		}
		opts.reportProgress(res)
	}
	return nil
}

// replayOne publishes msg, the copy of d, and acks d after the confirm. A
// copy that the broker returned or rejected is recorded in res.failed and d
// stays in the queue; any other error ends the replay.
func replayOne(ctx context.Context, pub *confirmPublisher, d *amqp.Delivery, msg amqp.Publishing, exchange, key string, opts replayOptions, res *replayResult) error {
	err := pub.publish(ctx, exchange, key, msg)
	if errors.Is(err, errReturned) || errors.Is(err, errNacked) {
		res.failed = append(res.failed, messageProblem{id: d.MessageId, err: err})
		return nil
	}
	if err != nil {
		return fmt.Errorf("replay message %q to %q: %w", d.MessageId, describeTarget(exchange, key), err)
	}

	if opts.afterConfirm != nil {
		opts.afterConfirm(res.replayed + 1)
	}
	if err := d.Ack(false); err != nil {
		return fmt.Errorf("ack message %q after its copy was confirmed (the message stays in the queue and its copy is in %q, so it will be handled twice): %w", d.MessageId, describeTarget(exchange, key), err)
	}
	res.replayed++
	return nil
}

func (o replayOptions) reportProgress(res *replayResult) {
	if o.progress != nil {
		o.progress(res.read, res.ready, res.replayed)
	}
}

// destination returns the exchange and routing key of the copy of d. A
// parked message goes to its route's queue through the default exchange.
// Its route is the hookbus-route header or, for a message that the broker
// dead-lettered itself, the route queue named in x-death (see newEntry). An
// unrouted message goes to the events exchange with its routing key.
func destination(d *amqp.Delivery, e entry, kind queueKind, names topology.Names) (exchange, key string, err error) {
	if kind == queueUnrouted {
		key = d.RoutingKey
		if key == "" && contract.ValidSource(e.Source) {
			key = contract.RoutingKey(e.Source, e.Type)
		}
		if key == "" {
			return "", "", fmt.Errorf("%w: no routing key and no valid %s header", errNoDestination, contract.HeaderSource)
		}
		return names.Exchange(), key, nil
	}

	if e.Route == "" {
		return "", "", fmt.Errorf("%w: no %s header, and x-death names no route queue of namespace %q", errNoDestination, consume.HeaderRoute, names.Namespace())
	}
	if err := topology.ValidateRoute(e.Route); err != nil {
		return "", "", fmt.Errorf("%w: header %s: %w", errNoDestination, consume.HeaderRoute, err)
	}
	return "", names.RouteQueue(e.Route), nil
}

// describeTarget names the target of a copy for messages: the route queue
// for the default exchange, otherwise the exchange and routing key.
func describeTarget(exchange, key string) string {
	if exchange == "" {
		return key
	}
	return exchange + " with routing key " + key
}

// isDroppedOnReplay reports whether a replayed copy leaves out the header:
// the processor's failure headers and the broker's dead-lettering headers,
// so that the copy's handler starts again with every attempt.
func isDroppedOnReplay(header string) bool {
	switch header {
	case consume.HeaderAttempts, consume.HeaderFirstFailedAt, consume.HeaderLastFailedAt,
		consume.HeaderError, consume.HeaderParkedReason, consume.HeaderParkedAt,
		consume.HeaderDelay, "x-death":
		return true
	}
	return strings.HasPrefix(header, "x-first-death-") || strings.HasPrefix(header, "x-last-death-")
}

// replayCopy returns the copy of d, summarised by e, to publish: the same
// body and properties, the headers without those isDroppedOnReplay lists,
// and hookbus-replays one higher. Like a parked copy (see consume), it is
// persistent and leaves out the expiration and user-id properties: the
// broker rejects a user-id that is not the publishing connection's user.
//
// A parked copy goes through the default exchange, so its routing key is
// the route queue's name. It gets a hookbus-routing-key header when it has
// none (the broker dead-lettered it), so that the original routing key
// survives if the message is parked again.
func replayCopy(d *amqp.Delivery, e entry, kind queueKind) amqp.Publishing {
	headers := amqp.Table{}
	for k, v := range d.Headers {
		if !isDroppedOnReplay(k) {
			headers[k] = v
		}
	}
	headers[consume.HeaderReplays] = int32(intHeader(d.Headers[consume.HeaderReplays]) + 1)
	if _, ok := headers[consume.HeaderRoutingKey]; !ok && kind == queueParked && e.RoutingKey != "" {
		headers[consume.HeaderRoutingKey] = e.RoutingKey
	}

	return amqp.Publishing{
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
}
