package dlq

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/topology"
)

// purgeResult is the outcome of purge.
type purgeResult struct {
	queue   string
	ready   int // messages ready in the queue at the start
	read    int
	matched int
	deleted int
}

// confirmFunc reports whether to delete the given number of messages, for
// example after prompting the operator.
type confirmFunc func(matched int) (bool, error)

// purge deletes the matching messages of the queue of kind by acking them.
// When confirm is nil it acks each match as soon as it reads it. Otherwise
// it reads every message first, holding the matches unacked, calls confirm
// with their number, and acks exactly those messages only when confirm
// returns true. Messages that do not match, or all of them when confirm
// declines, return to the queue.
func purge(ctx context.Context, conn *amqp.Connection, names topology.Names, kind queueKind, f filter, confirm confirmFunc) (purgeResult, error) {
	res := purgeResult{queue: kind.name(names)}
	rd, err := openReader(conn, res.queue)
	if err != nil {
		return res, err
	}
	res.ready = rd.ready

	err = purgeMessages(ctx, rd, names, kind, f, confirm, &res)
	if closeErr := rd.close(); closeErr != nil && res.deleted > 0 {
		// The broker may have dropped the channel before the acks.
		err = errors.Join(err, fmt.Errorf("%w (some of the %d messages deleted may still be in the queue; run list to check)", closeErr, res.deleted))
	} else if closeErr != nil {
		err = errors.Join(err, closeErr)
	}
	return res, err
}

// purgeMessages is the loop of purge.
func purgeMessages(ctx context.Context, rd *reader, names topology.Names, kind queueKind, f filter, confirm confirmFunc, res *purgeResult) error {
	now := time.Now()
	var pendingTags []uint64 // delivery tags of the matches, when confirm is set
	for {
		d, err := rd.next(ctx)
		if err != nil {
			return err
		}
		if d == nil {
			break
		}
		res.read = rd.read
		if !f.match(newEntry(d, kind, names, now)) {
			continue
		}
		res.matched++
		if confirm != nil {
			pendingTags = append(pendingTags, d.DeliveryTag)
			continue
		}
		if err := d.Ack(false); err != nil {
			return fmt.Errorf("delete message %q: %w", d.MessageId, err)
		}
		res.deleted++
	}

	if confirm == nil || res.matched == 0 {
		return nil
	}
	ok, err := confirm(res.matched)
	if err != nil || !ok {
		return err
	}
	for _, tag := range pendingTags {
		if err := rd.ch.Ack(tag, false); err != nil {
			return fmt.Errorf("delete message: %w", err)
		}
		res.deleted++
	}
	return nil
}
