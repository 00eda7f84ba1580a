//go:build linux

package chaos

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	ingestservice "github.com/hookbus/hookbus/ingest/service"
	"github.com/hookbus/hookbus/ingest/spool"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/topology"
)

// Settle bounds. After the load stops, the processors get up to
// settleTimeout to handle every accepted webhook. When some remain
// unprocessed, settling ends earlier once nothing was processed for
// quietPeriod while the route queue and the spool are empty: the rest can
// only be in the unrouted queue, the parking lot, or lost.
const (
	settleTimeout = 2 * time.Minute
	quietPeriod   = 5 * time.Second
	settlePoll    = 250 * time.Millisecond
	// missingShown is how many missing ids a failure lists.
	missingShown = 20
)

// tally is the reconciliation of one scenario. Every accepted id must be
// processed, parked, still queued or still in the spool; the others are
// missing.
type tally struct {
	sent       int
	accepted   int
	spooled    int // accepted with "spooled": true
	processed  int // distinct ids in "event received" lines, accepted or not
	duplicates int // "event received" lines beyond the first of each id
	parked     int // accepted ids in the parking lot
	queued     int // accepted ids left in the route, unrouted or delay queues
	inSpool    int // accepted ids left in the ingest spool file
	missing    []string
}

// reconcile stops the load, lets the processors settle, stops every
// service with SIGTERM, drains the namespace's queues and the spool, and
// checks that every accepted webhook was found. It fails the test when
// more than allowedMissing are missing. It prints one result line, with
// extra appended, and returns the tally.
func (sc *scenario) reconcile(l *load, allowedMissing int, extra string) tally {
	sc.t.Helper()
	l.stop()
	sc.settle(l)
	sc.stopAll()

	found := map[string]string{} // id → where it was found
	for _, queue := range sc.queuesToDrain() {
		for _, id := range sc.drainQueue(queue) {
			found[id] = queue
		}
	}
	for _, id := range sc.spooledLeft() {
		found[id] = "spool"
	}

	counts, lines := sc.processed.snapshot()
	outcomes := l.results()
	tl := tally{sent: len(outcomes), processed: len(counts), duplicates: lines - len(counts)}
	for id, o := range outcomes {
		if !o.accepted() {
			continue
		}
		tl.accepted++
		if o.spooled {
			tl.spooled++
		}
		if counts[id] > 0 {
			continue
		}
		switch place, ok := found[id]; {
		case !ok:
			tl.missing = append(tl.missing, id)
		case place == sc.names.ParkedQueue():
			tl.parked++
		case place == "spool":
			tl.inSpool++
		default:
			tl.queued++
		}
	}
	slices.Sort(tl.missing)

	line := fmt.Sprintf("%-26s spool=%s sent=%d accepted=%d not_accepted=%d spooled=%d processed=%d duplicates=%d parked=%d queued=%d in_spool=%d missing=%d",
		sc.t.Name(), onOff(sc.spoolDir != ""), tl.sent, tl.accepted, tl.sent-tl.accepted, tl.spooled,
		tl.processed, tl.duplicates, tl.parked, tl.queued, tl.inSpool, len(tl.missing))
	if extra != "" {
		line += " " + extra
	}
	sc.t.Log(line)
	sc.suite.addResult(line)

	if len(tl.missing) > allowedMissing {
		firstMissing := tl.missing[:min(len(tl.missing), missingShown)]
		var details []string
		for _, id := range firstMissing {
			o := outcomes[id]
			details = append(details, fmt.Sprintf("%s (status %d, spooled %t, latency %s)", id, o.status, o.spooled, o.latency.Round(time.Millisecond)))
		}
		sc.t.Errorf("%d accepted webhooks are missing (allowed %d), the first %d:\n  %s",
			len(tl.missing), allowedMissing, len(firstMissing), strings.Join(details, "\n  "))
	}
	return tl
}

// settle waits until every accepted webhook was processed, or until
// nothing was processed for quietPeriod while the route queue and the spool
// are empty, or until settleTimeout.
func (sc *scenario) settle(l *load) {
	sc.t.Helper()
	accepted := l.acceptedIDs()
	start := time.Now()
	lastAdded, lastChange := -1, time.Now()
	for {
		if sc.processed.missingFrom(accepted) == 0 {
			return
		}
		if added := sc.processed.added(); added != lastAdded {
			lastAdded, lastChange = added, time.Now()
		}
		if time.Since(lastChange) >= quietPeriod && sc.pipelineEmpty() {
			return
		}
		if time.Since(start) > settleTimeout {
			sc.t.Logf("settling timed out after %s with %d accepted webhooks not processed yet", settleTimeout, sc.processed.missingFrom(accepted))
			return
		}
		time.Sleep(settlePoll) // polling interval of a condition with a deadline
	}
}

// pipelineEmpty reports whether the route queue has no ready messages and
// the running ingest's spool, if any, is empty.
func (sc *scenario) pipelineEmpty() bool {
	if n, ok := sc.spoolMessages(); ok && n > 0 {
		return false
	}
	ready, err := sc.readyMessages(sc.names.RouteQueue(routeName))
	return err == nil && ready == 0
}

// readyMessages returns the ready messages of a queue from a passive
// declare on a connection of its own, which a missing queue closes.
func (sc *scenario) readyMessages(queue string) (int, error) {
	conn, err := amqp.DialConfig(sc.suite.node.url(), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		return 0, err
	}
	q, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil)
	if err != nil {
		return 0, err
	}
	return q.Messages, nil
}

// queuesToDrain returns the queues of the namespace that can hold an
// accepted webhook after the processors stopped.
func (sc *scenario) queuesToDrain() []string {
	queues := []string{sc.names.RouteQueue(routeName), sc.names.UnroutedQueue(), sc.names.ParkedQueue()}
	for _, ttl := range topology.DefaultRetrySchedule.TTLs() {
		queues = append(queues, sc.names.DelayQueue(ttl))
	}
	return queues
}

// drainQueue takes every message from the queue with basic.get, checks
// that it follows the message contract and returns the message ids. A
// queue that does not exist holds nothing.
func (sc *scenario) drainQueue(queue string) []string {
	sc.t.Helper()
	conn, err := amqp.DialConfig(sc.suite.node.url(), amqp.Config{Dial: amqp.DefaultDial(5 * time.Second)})
	if err != nil {
		sc.t.Errorf("drain %s: %v", queue, err)
		return nil
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		sc.t.Errorf("drain %s: %v", queue, err)
		return nil
	}
	if _, err := ch.QueueDeclarePassive(queue, true, false, false, false, nil); err != nil {
		var amqpErr *amqp.Error
		if errors.As(err, &amqpErr) && amqpErr.Code == amqp.NotFound {
			return nil
		}
		sc.t.Errorf("drain %s: %v", queue, err)
		return nil
	}
	var ids []string
	for {
		d, ok, err := ch.Get(queue, true)
		if err != nil {
			sc.t.Errorf("drain %s: %v", queue, err)
			return ids
		}
		if !ok {
			return ids
		}
		msg, err := contract.Decode(&d)
		if err != nil {
			sc.t.Errorf("message %q in %s: %v", d.MessageId, queue, err)
			continue
		}
		ids = append(ids, msg.ID)
	}
}

// spooledLeft returns the message ids still in the spool file, which only
// a stopped ingest leaves unlocked.
func (sc *scenario) spooledLeft() []string {
	sc.t.Helper()
	if sc.spoolDir == "" {
		return nil
	}
	path := filepath.Join(sc.spoolDir, ingestservice.SpoolFileName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	sp, err := spool.Open(path, math.MaxInt64)
	if err != nil {
		sc.t.Errorf("open the spool to count what is left: %v", err)
		return nil
	}
	defer sp.Close()
	records, err := sp.Oldest(math.MaxInt32)
	if err != nil {
		sc.t.Errorf("read the spool: %v", err)
		return nil
	}
	ids := make([]string, 0, len(records))
	for _, r := range records {
		ids = append(ids, r.Entry.Publishing.MessageId)
	}
	return ids
}
