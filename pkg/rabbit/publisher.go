package rabbit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Errors that Publish returns, wrapped with detail. None of them means the
// broker has the message, and none means it does not: a message whose confirm
// did not arrive in time may still be stored.
var (
	ErrNotConnected   = errors.New("rabbit: no open channel to the broker")
	ErrBlocked        = errors.New("rabbit: broker blocked the connection")
	ErrNacked         = errors.New("rabbit: broker rejected the message")
	ErrReturned       = errors.New("rabbit: message returned as unroutable")
	ErrChannelClosed  = errors.New("rabbit: channel closed before the confirm arrived")
	ErrConfirmTimeout = errors.New("rabbit: confirm did not arrive in time")
)

// confirmBuffer is the capacity of each channel's confirmation buffer.
// amqp091-go drops a confirmation that cannot be delivered within 5 seconds,
// so the buffer absorbs bursts while the dispatcher is busy.
const confirmBuffer = 4096

// Publisher publishes messages with publisher confirms on a fixed number of
// confirm-mode channels, and reopens them after channel or connection loss.
// Many Publish calls may wait for their confirms at once on each channel: a
// lock is held only while a message is written, never while its confirm is
// awaited. It is safe for concurrent use.
type Publisher struct {
	client *Client
	log    *slog.Logger
	slots  []*confirmChannel
	next   atomic.Uint32
}

// NewPublisher returns a Publisher with the given number of channels (at
// least one) on client's connection. It publishes nothing until Run runs.
func NewPublisher(client *Client, channels int, logger *slog.Logger) *Publisher {
	if logger == nil {
		logger = slog.Default()
	}
	p := &Publisher{client: client, log: logger}
	for i := range max(channels, 1) {
		p.slots = append(p.slots, &confirmChannel{index: i, pending: map[uint64]*pendingPublish{}})
	}
	return p
}

// Run opens the channels and keeps them open until ctx is done, then closes
// them. Publish calls waiting for a confirm when a channel closes return
// ErrChannelClosed. Run returns when every channel is closed.
func (p *Publisher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for _, slot := range p.slots {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.runSlot(ctx, slot)
		}()
	}
	wg.Wait()
}

// Ready reports whether at least one channel is open and the connection is
// not blocked.
func (p *Publisher) Ready() bool {
	if p.client.Blocked() {
		return false
	}
	for _, slot := range p.slots {
		if slot.open() {
			return true
		}
	}
	return false
}

// Publish publishes msg to exchange with the routing key and the mandatory
// flag set, and waits until the broker confirms it or ctx is done. It returns
// nil only when the broker acknowledged the message and did not return it.
// Otherwise the error wraps ErrNotConnected, ErrBlocked, ErrNacked,
// ErrReturned, ErrChannelClosed or ErrConfirmTimeout. Returns are matched to
// publishes by msg.MessageId, so every message needs one; when two messages
// with the same id wait on one channel, a return fails both.
func (p *Publisher) Publish(ctx context.Context, exchange, key string, msg amqp.Publishing) error {
	if p.client.Blocked() {
		return ErrBlocked
	}
	start := p.next.Add(1)
	for i := range p.slots {
		slot := p.slots[(int(start)+i)%len(p.slots)]
		done, err := slot.publish(ctx, exchange, key, msg)
		if errors.Is(err, ErrNotConnected) {
			continue
		}
		if err != nil {
			return err
		}
		select {
		case err := <-done:
			return err
		case <-ctx.Done():
			return fmt.Errorf("%w: %w", ErrConfirmTimeout, ctx.Err())
		}
	}
	return ErrNotConnected
}

func (p *Publisher) runSlot(ctx context.Context, slot *confirmChannel) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		conn, err := p.client.Connection(ctx)
		if err != nil {
			return
		}
		ch, err := openConfirmChannel(conn)
		if err != nil {
			p.log.Warn("publish channel open failed", "channel", slot.index, "error", err)
			if !sleep(ctx, jitter(backoff)) {
				return
			}
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond

		// The return channel is unbuffered on purpose: amqp091-go hands
		// a basic.return to it and finishes that hand-off before it
		// reads the basic.ack that follows the return on the wire. The
		// dispatcher receives both in one goroutine, so it always sees a
		// message's return before its ack.
		returns := ch.NotifyReturn(make(chan amqp.Return))
		confirms := ch.NotifyPublish(make(chan amqp.Confirmation, confirmBuffer))
		closed := ch.NotifyClose(make(chan *amqp.Error, 1))
		slot.attach(conn, ch)

		reason := slot.dispatch(ctx, returns, confirms, closed)
		slot.detach()
		if ctx.Err() == nil {
			p.log.Warn("publish channel closed, reopening", "channel", slot.index, "reason", reason)
		}
	}
}

func openConfirmChannel(conn *amqp.Connection) (*amqp.Channel, error) {
	ch, err := conn.Channel()
	if err != nil {
		return nil, fmt.Errorf("open channel: %w", err)
	}
	if err := ch.Confirm(false); err != nil {
		_ = ch.Close()
		return nil, fmt.Errorf("enable confirm mode: %w", err)
	}
	return ch, nil
}

// confirmChannel is one confirm-mode channel and the publishes waiting for
// their confirms on it.
type confirmChannel struct {
	index int

	// publishMu serialises reading the next delivery tag, registering the
	// pending publish and writing the message, so that tags match. It
	// guards ch.
	publishMu sync.Mutex
	ch        *amqp.Channel
	conn      *amqp.Connection // the connection of ch

	// mu guards pending, the publishes waiting for a confirm by
	// delivery tag.
	mu      sync.Mutex
	pending map[uint64]*pendingPublish
}

type pendingPublish struct {
	messageID string
	returned  string // the broker's reply text when the message came back
	done      chan error
}

func (c *confirmChannel) open() bool {
	c.publishMu.Lock()
	defer c.publishMu.Unlock()
	return c.usable()
}

// usable reports whether the attached channel and its connection are open.
// amqp091-go marks a channel closed only some time after its connection
// died, so both are checked. The caller holds publishMu.
func (c *confirmChannel) usable() bool {
	return c.ch != nil && !c.ch.IsClosed() && !c.conn.IsClosed()
}

func (c *confirmChannel) attach(conn *amqp.Connection, ch *amqp.Channel) {
	c.publishMu.Lock()
	defer c.publishMu.Unlock()
	c.conn = conn
	c.ch = ch
}

// detach forgets the channel and fails the publishes still waiting on it.
// Taking publishMu first waits for a publish that is being written, so no
// publish can register after the failures are sent.
func (c *confirmChannel) detach() {
	c.publishMu.Lock()
	defer c.publishMu.Unlock()
	if c.ch != nil {
		_ = c.ch.Close()
		c.ch = nil
		c.conn = nil
	}

	c.mu.Lock()
	defer c.mu.Unlock()
	for tag, p := range c.pending {
		p.done <- ErrChannelClosed
		delete(c.pending, tag)
	}
}

// publish writes msg and returns the channel on which its outcome arrives.
func (c *confirmChannel) publish(ctx context.Context, exchange, key string, msg amqp.Publishing) (<-chan error, error) {
	c.publishMu.Lock()
	defer c.publishMu.Unlock()
	// A channel of a lost connection stays attached until the dispatcher
	// sees the close; report it like a missing one so that Publish tries
	// the other channels.
	if !c.usable() {
		return nil, ErrNotConnected
	}

	tag := c.ch.GetNextPublishSeqNo()
	p := &pendingPublish{messageID: msg.MessageId, done: make(chan error, 1)}
	c.mu.Lock()
	c.pending[tag] = p
	c.mu.Unlock()

	if err := c.ch.PublishWithContext(ctx, exchange, key, true, false, msg); err != nil {
		c.mu.Lock()
		delete(c.pending, tag)
		c.mu.Unlock()
		if c.ch.IsClosed() || c.conn.IsClosed() {
			return nil, fmt.Errorf("%w: %w", ErrChannelClosed, err)
		}
		if ctxErr := ctx.Err(); ctxErr != nil && errors.Is(err, ctxErr) {
			// amqp091-go v1.17.0 checks ctx only before it writes, so
			// the broker did not get the message.
			return nil, fmt.Errorf("%w: %w", ErrConfirmTimeout, err)
		}
		// A write that failed on an open channel leaves the connection
		// unusable; amqp091-go closes it.
		return nil, fmt.Errorf("%w: write failed: %w", ErrChannelClosed, err)
	}
	return p.done, nil
}

// dispatch resolves pending publishes from the channel's returns and
// confirms until the channel closes or ctx is done, and returns the reason.
// After the close notification it goes on reading confirms until amqp091-go
// closes that channel too, so that acks received just before the close still
// reach their publishes.
func (c *confirmChannel) dispatch(ctx context.Context, returns <-chan amqp.Return, confirms <-chan amqp.Confirmation, closed <-chan *amqp.Error) error {
	var reason error = amqp.ErrClosed
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case err, ok := <-closed:
			if ok && err != nil {
				reason = err
			}
			closed = nil
		case r, ok := <-returns:
			if !ok {
				returns = nil
				continue
			}
			c.markReturned(r)
		case confirm, ok := <-confirms:
			if !ok {
				return reason
			}
			c.resolve(confirm)
		}
	}
}

func (c *confirmChannel) markReturned(r amqp.Return) {
	c.mu.Lock()
	defer c.mu.Unlock()
	text := fmt.Sprintf("%d %s", r.ReplyCode, r.ReplyText)
	for _, p := range c.pending {
		if p.messageID == r.MessageId {
			p.returned = text
		}
	}
}

func (c *confirmChannel) resolve(confirm amqp.Confirmation) {
	c.mu.Lock()
	p, ok := c.pending[confirm.DeliveryTag]
	delete(c.pending, confirm.DeliveryTag)
	c.mu.Unlock()
	if !ok {
		return
	}
	switch {
	case !confirm.Ack:
		p.done <- ErrNacked
	case p.returned != "":
		p.done <- fmt.Errorf("%w: %s", ErrReturned, p.returned)
	default:
		p.done <- nil
	}
}
