package dlq

import (
	"context"
	"errors"
	"fmt"

	amqp "github.com/rabbitmq/amqp091-go"
)

// reader takes the messages of one queue with basic.get without auto-ack,
// at most as many as the queue had ready when the reader opened. Messages
// arriving later, including copies that a replay sends back to the same
// queue, are not read. Messages that the caller does not ack return to the
// queue when the reader closes.
//
// Every return counts as a delivery of a quorum queue message before
// RabbitMQ 4.3; the parked and unrouted queues therefore carry a delivery
// limit that is never reached (topology.InspectionDeliveryLimit).
type reader struct {
	ch    *amqp.Channel
	queue string
	ready int // ready messages when the reader opened
	read  int // messages taken so far
}

// openReader opens a channel on conn and reads the ready message count of
// queue with a passive declare.
func openReader(conn *amqp.Connection, queue string) (*reader, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		_ = ch.Close()
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
			return nil, fmt.Errorf("queue %q not found: check HOOKBUS_NAMESPACE (ingest and processor declare the queue when they start): %w", queue, err)
		}
		return nil, fmt.Errorf("inspect queue %q: %w", queue, err)
	}
	return &reader{ch: ch, queue: queue, ready: q.Messages}, nil
}

// next returns the next message, or nil when the reader has read as many as
// the queue had ready or the queue is empty. It returns ctx's error once ctx
// is done.
func (r *reader) next(ctx context.Context) (*amqp.Delivery, error) {
	if r.read >= r.ready {
		return nil, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	d, ok, err := r.ch.Get(r.queue, false)
	if err != nil {
		return nil, fmt.Errorf("get a message from queue %q: %w", r.queue, err)
	}
	if !ok {
		return nil, nil
	}
	r.read++
	return &d, nil
}

// close closes the channel, which returns every message not acked to the
// queue. The broker handles the channel's acks before the close, so a nil
// error also means that every ack sent before took effect.
func (r *reader) close() error {
	if err := r.ch.Close(); err != nil {
		return fmt.Errorf("close the channel of queue %q: %w", r.queue, err)
	}
	return nil
}
