package dlq

import (
	"context"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// confirmTimeout bounds the wait for the broker's confirm of one copy.
const confirmTimeout = 30 * time.Second

// Errors of confirmPublisher.publish. errReturned and errNacked concern one
// message and leave the channel usable; the others end the replay.
var (
	errReturned       = errors.New("dlq: broker returned the message as unroutable")
	errNacked         = errors.New("dlq: broker rejected the message")
	errChannelClosed  = errors.New("dlq: publish channel closed before the confirm arrived")
	errConfirmTimeout = errors.New("dlq: confirm did not arrive in time")
)

// confirmPublisher publishes one message at a time on a confirm-mode
// channel, with the mandatory flag, and waits for each confirm.
type confirmPublisher struct {
	ch       *amqp.Channel
	returns  <-chan amqp.Return
	confirms <-chan amqp.Confirmation
	closed   <-chan *amqp.Error
}

// openConfirmPublisher opens a confirm-mode channel on conn.
func openConfirmPublisher(conn *amqp.Connection) (*confirmPublisher, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open publish channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enable confirm mode: %w", err)
	}
	return &confirmPublisher{
		ch: ch,
		// Unbuffered, so that amqp091-go hands over a message's
		// basic.return before it reads the basic.ack that follows it on
		// the wire. So publish receives the return first.
		returns:  ch.NotifyReturn(make(chan amqp.Return)),
		confirms: ch.NotifyPublish(make(chan amqp.Confirmation, 1)),
		closed:   ch.NotifyClose(make(chan *amqp.Error, 1)),
	}, nil
}

// publish publishes msg with the mandatory flag and returns nil only when
// the broker confirmed it without returning it. Only one publish may run at
// a time.
func (p *confirmPublisher) publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	if err := p.ch.PublishWithContext(ctx, exchange, key, true, false, msg); err != nil {
		return fmt.Errorf("publish: %w", err)
	}

	timer := time.NewTimer(confirmTimeout)
	defer timer.Stop()
	var returned *amqp.Return
	for {
		select {
		case r, ok := <-p.returns:
			if !ok {
				p.returns = nil
				continue
			}
			returned = &r
		case c, ok := <-p.confirms:
			switch {
			case !ok:
				return fmt.Errorf("%w: %v", errChannelClosed, p.closeReason())
			case !c.Ack:
				return errNacked
			case returned != nil:
				return fmt.Errorf("%w: %d %s", errReturned, returned.ReplyCode, returned.ReplyText)
			}
			return nil
		case <-timer.C:
			return fmt.Errorf("%w after %s", errConfirmTimeout, confirmTimeout)
		}
	}
}

// closeReason returns the broker's reason for closing the channel, or
// amqp.ErrClosed when there is none.
func (p *confirmPublisher) closeReason() error {
	select {
	case err, ok := <-p.closed:
		if ok && err != nil {
			return err
		}
	default:
	}
	return amqp.ErrClosed
}

func (p *confirmPublisher) close() error {
	if err := p.ch.Close(); err != nil && !errors.Is(err, amqp.ErrClosed) {
		return fmt.Errorf("close publish channel: %w", err)
	}
	return nil
}
