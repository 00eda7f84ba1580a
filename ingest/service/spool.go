package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/ingest/spool"
	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/rabbit"
)

// SpoolFileName is the name of the spool file in HOOKBUS_SPOOL_DIR.
const SpoolFileName = "spool.db"

// Drain settings. A batch of at most drainBatch messages and
// drainMaxBatchBytes bytes is published at once, each message from its own
// goroutine, and the confirmed ones are deleted in one transaction. A batch
// that confirmed nothing halves the byte budget of the next one, down to a
// single message, so that a slow link still makes progress; each success
// doubles it again. A batch may take drainMinTimeout, or the publish timeout
// when that is longer. After a failure the drainer waits, doubling the wait
// from drainMinBackoff up to drainMaxBackoff, with jitter.
const (
	drainBatch         = 64
	drainMaxBatchBytes = 4 << 20
	drainMinTimeout    = 30 * time.Second
	drainMinBackoff    = 100 * time.Millisecond
	drainMaxBackoff    = 5 * time.Second
)

// spooler connects the spool to the request handler, readiness and metrics,
// and drains it to the broker.
type spooler struct {
	spool     *spool.Spool
	publisher *rabbit.Publisher
	log       *slog.Logger
	metrics   *metrics
	// timeout bounds the wait for the confirms of one drain batch.
	timeout time.Duration
	// wake has room for one signal, which notify sends after each write so
	// that an idle drainer looks at the spool again.
	wake chan struct{}
	// outage is set by the first webhook spooled after a healthy period and
	// cleared when the drainer empties the spool, so that an outage logs one
	// warning rather than one per webhook.
	outage atomic.Bool
}

// openSpooler creates cfg.SpoolDir when needed and opens the spool file in
// it. It fails when another process holds the file's lock.
func openSpooler(cfg Config, publisher *rabbit.Publisher, m *metrics, logger *slog.Logger) (*spooler, error) {
	if err := os.MkdirAll(cfg.SpoolDir, 0o700); err != nil {
		return nil, fmt.Errorf("%s_SPOOL_DIR: create %s: %w", config.Prefix, cfg.SpoolDir, err)
	}
	sp, err := spool.Open(filepath.Join(cfg.SpoolDir, SpoolFileName), cfg.SpoolMaxBytes)
	if err != nil {
		return nil, fmt.Errorf("%s_SPOOL_DIR %s: %w", config.Prefix, cfg.SpoolDir, err)
	}
	m.registerSpool(sp)
	return &spooler{
		spool:     sp,
		publisher: publisher,
		log:       logger,
		metrics:   m,
		timeout:   max(cfg.PublishTimeout, drainMinTimeout),
		wake:      make(chan struct{}, 1),
	}, nil
}

// spoolStatus is the "spool" object of GET /readyz.
type spoolStatus struct {
	Enabled          bool    `json:"enabled"`
	Messages         int64   `json:"messages"`
	Bytes            int64   `json:"bytes"`
	OldestAgeSeconds float64 `json:"oldest_age_seconds"`
	Full             bool    `json:"full"`
}

// accepts reports whether the spool is on and can take webhooks.
func (st spoolStatus) accepts() bool {
	return st.Enabled && !st.Full
}

// status returns the spool's depth. A nil spooler is a disabled spool. A
// spool whose stats cannot be read counts as full, because it may not
// accept webhooks either.
func (sp *spooler) status() spoolStatus {
	if sp == nil {
		return spoolStatus{}
	}
	stats, err := sp.spool.Stats()
	if err != nil {
		sp.log.Error("spool stats read failed", "path", sp.spool.Path(), "error", err)
		return spoolStatus{Enabled: true, Full: true}
	}
	return spoolStatus{
		Enabled:          true,
		Messages:         stats.Messages,
		Bytes:            stats.Bytes,
		OldestAgeSeconds: stats.OldestAge(time.Now()).Seconds(),
		Full:             stats.Full,
	}
}

// spoolWebhook writes a webhook whose publish failed with publishErr to the
// spool and reports whether it did. When it returns true, the webhook is on
// disk and may be acknowledged. It logs a warning for the first webhook
// spooled after a healthy period and debug lines for the following ones. A
// full spool logs a warning, and a failed write an error.
func (s *Service) spoolWebhook(source, id, routingKey string, publishing amqp.Publishing, publishErr error) bool {
	attrs := []any{"source", source, "message_id", id, "routing_key", routingKey, "error", publishErr}
	err := s.spooler.spool.Put(spool.Entry{
		Exchange:   s.names.Exchange(),
		RoutingKey: routingKey,
		Publishing: publishing,
	})
	switch {
	case errors.Is(err, spool.ErrFull):
		s.log.Warn("webhook rejected with 503, spool full", append(attrs, "spool_error", err)...)
		return false
	case err != nil:
		s.log.Error("webhook rejected with 503, spool write failed", append(attrs, "spool_error", err)...)
		return false
	}

	s.metrics.spooled.Inc()
	s.spooler.notify()
	if s.spooler.outage.CompareAndSwap(false, true) {
		s.log.Warn("broker unavailable, spooling webhooks", attrs...)
	} else {
		s.log.Debug("webhook spooled", attrs...)
	}
	return true
}

// notify wakes the drainer if it waits for new messages.
func (sp *spooler) notify() {
	select {
	case sp.wake <- struct{}{}:
	default:
	}
}

// run drains the spool until ctx is done. It publishes the oldest messages
// in batches whenever the publisher is ready, and deletes each message only
// after the broker confirmed it. A crash between the confirm and the delete
// publishes the message again after the restart, with the same message id.
func (sp *spooler) run(ctx context.Context) {
	if stats, err := sp.spool.Stats(); err == nil && stats.Messages > 0 {
		sp.log.Info("spool has webhooks from an earlier run, publishing them", "path", sp.spool.Path(), "messages", stats.Messages, "bytes", stats.Bytes)
	}

	backoff := drainMinBackoff
	batchBytes := int64(drainMaxBatchBytes)
	failing := false
	drained := 0
	var drainStart time.Time
	// nextWait returns the wait before the next attempt and doubles the
	// backoff.
	nextWait := func() time.Duration {
		wait := jitter(backoff)
		backoff = min(backoff*2, drainMaxBackoff)
		return wait
	}

	for ctx.Err() == nil {
		records, err := sp.spool.Oldest(drainBatch)
		if err != nil {
			wait := nextWait()
			sp.log.Error("spool read failed, retrying", "path", sp.spool.Path(), "error", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		if len(records) == 0 {
			if drained > 0 || sp.outage.Load() {
				sp.log.Info("spool drained", "messages", drained, "duration", time.Since(drainStart).Round(time.Millisecond))
			}
			sp.outage.Store(false)
			drained, failing, backoff = 0, false, drainMinBackoff
			select {
			case <-ctx.Done():
				return
			case <-sp.wake:
			}
			continue
		}
		if drained == 0 && !failing {
			drainStart = time.Now()
		}
		if !sp.publisher.Ready() {
			// The broker client logs why it has no connection.
			if !sleep(ctx, nextWait()) {
				return
			}
			continue
		}

		records = limitBatch(records, batchBytes)
		confirmed, err := sp.publishBatch(ctx, records)
		if len(confirmed) == 0 && err != nil {
			batchBytes = max(batchBytes/2, 1)
		} else if err == nil {
			batchBytes = min(batchBytes*2, drainMaxBatchBytes)
		}
		if len(confirmed) > 0 {
			if delErr := sp.spool.Delete(confirmed); delErr != nil {
				// The messages stay in the spool and are published
				// again: duplicates, never losses.
				sp.log.Error("spool delete failed, the confirmed webhooks will be published again", "path", sp.spool.Path(), "messages", len(confirmed), "error", delErr)
				err = errors.Join(err, delErr)
			} else {
				drained += len(confirmed)
				sp.metrics.drained.Add(float64(len(confirmed)))
			}
		}
		if err != nil {
			// NOTE: a message that the broker rejects every time stays
			// at the head of the spool and is retried until an operator
			// fixes the cause, because the spool has no parking lot.
			//
			// A failure streak logs one warning. A return means that
			// the topology lacks the alternate exchange, which only an
			// operator can fix, so every return logs an error.
			level := slog.LevelDebug
			if !failing {
				level = slog.LevelWarn
				failing = true
			}
			if errors.Is(err, rabbit.ErrReturned) {
				level = slog.LevelError
			}
			wait := nextWait()
			sp.log.Log(ctx, level, "spool drain incomplete, retrying", "batch", len(records), "confirmed", len(confirmed), "error", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		failing, backoff = false, drainMinBackoff
	}
}

// limitBatch returns the oldest records whose sizes add up to at most
// maxBytes, and at least one record.
func limitBatch(records []spool.Record, maxBytes int64) []spool.Record {
	var total int64
	for i, r := range records {
		total += r.Size
		if total > maxBytes && i > 0 {
			return records[:i]
		}
	}
	return records
}

// publishBatch publishes records at once and returns the keys of those the
// broker confirmed, and the first error of the others. sp.timeout bounds
// the wait. Shutdown (ctx's end) stops the wait at once: messages whose
// confirms had not arrived stay in the spool and are published again after
// the restart, which may duplicate them.
func (sp *spooler) publishBatch(ctx context.Context, records []spool.Record) ([]uint64, error) {
	publishCtx, cancel := context.WithTimeout(ctx, sp.timeout)
	defer cancel()

	errs := make([]error, len(records))
	var wg sync.WaitGroup
	for i, record := range records {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e := record.Entry
			errs[i] = sp.publisher.Publish(publishCtx, e.Exchange, e.RoutingKey, e.Publishing)
		}()
	}
	wg.Wait()

	var confirmed []uint64
	var firstErr error
	for i, err := range errs {
		switch {
		case err == nil:
			confirmed = append(confirmed, records[i].Key)
		case firstErr == nil:
			firstErr = fmt.Errorf("message %s: %w", records[i].Entry.Publishing.MessageId, err)
		}
	}
	return confirmed, firstErr
}

// close closes the spool file. Call it after run has returned.
func (sp *spooler) close() error {
	return sp.spool.Close()
}

// jitter returns a duration drawn uniformly from [d/2, d].
func jitter(d time.Duration) time.Duration {
	half := d / 2
	return half + rand.N(half+1)
}

// sleep waits for d and reports whether it did so before ctx was done.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
