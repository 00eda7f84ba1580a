//go:build linux

package chaos

import (
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	ingestservice "github.com/hookbus/hookbus/ingest/service"
	processorservice "github.com/hookbus/hookbus/processor/service"
)

// profile sets the length of each disturbance. The default profile keeps
// the whole suite within a few minutes; the soak profile
// (HOOKBUS_CHAOS_SOAK=1) repeats the disturbances of the first four tests
// for longer.
type profile struct {
	load   loadConfig
	warmup time.Duration // steady load before the first disturbance
	tail   time.Duration // steady load after the last one

	restarts   int           // broker application stops
	outage     time.Duration // how long each stop lasts
	restartGap time.Duration // steady load between two stops

	closes   int           // rounds of force-closed connections
	closeGap time.Duration // steady load between two rounds

	killRounds int // rounds of killed processor and ingest

	alarms     int           // memory alarms
	alarm      time.Duration // how long each alarm lasts
	alarmLevel string        // vm_memory_high_watermark that raises the alarm
}

func (s *suite) profile() profile {
	p := profile{
		load:       loadConfig{rate: 200, workers: 12},
		warmup:     5 * time.Second,
		tail:       5 * time.Second,
		restarts:   2,
		outage:     20 * time.Second,
		restartGap: 8 * time.Second,
		closes:     20,
		closeGap:   500 * time.Millisecond,
		killRounds: 1,
		alarms:     1,
		alarm:      30 * time.Second,
		alarmLevel: "0.0000001",
	}
	if s.soak {
		p.tail = 30 * time.Second
		p.restarts, p.outage, p.restartGap = 6, 30*time.Second, 20*time.Second
		p.closes, p.closeGap = 150, time.Second
		p.killRounds = 4
		p.alarms, p.alarm = 3, 60*time.Second
	}
	return p
}

// Connection names of the services, as the broker lists them.
const (
	ingestConnection    = ingestservice.ConnectionName
	processorConnection = processorservice.ConnectionName
)

// minSpooled is how many webhooks the spool must hold before the process
// kill test kills ingest.
const minSpooled = 100

// TestBrokerAppRestart stops the broker application under load for the
// profile's outage and starts it again, twice (six times when soaking).
func TestBrokerAppRestart(t *testing.T) {
	s := setup(t)
	p := s.profile()
	sc := newScenario(t, s)
	sc.startProcessor()
	sc.startProcessor()
	sc.startIngest()
	l := sc.startLoad(p.load)
	hold(t.Context(), p.warmup)

	for range p.restarts {
		sc.stopApp()
		hold(t.Context(), p.outage)
		sc.startApp()
		hold(t.Context(), p.restartGap)
	}
	hold(t.Context(), p.tail)

	tl := sc.reconcile(l, 0, fmt.Sprintf("restarts=%d outage=%s", p.restarts, p.outage))
	if s.spool && tl.spooled == 0 {
		t.Errorf("ingest spooled no webhook while the broker was stopped, want some 202 responses with \"spooled\": true")
	}
}

// TestConnectionForceClose force-closes the connections of ingest and of
// both processors with rabbitmqctl close_connection, round after round,
// under load.
func TestConnectionForceClose(t *testing.T) {
	s := setup(t)
	p := s.profile()
	sc := newScenario(t, s)
	sc.startProcessor()
	sc.startProcessor()
	sc.startIngest()
	l := sc.startLoad(p.load)
	hold(t.Context(), p.warmup)

	total := map[string]int{}
	for round := 1; round <= p.closes; round++ {
		closed := sc.closeConnections(round)
		for name, n := range closed {
			total[name] += n
		}
		hold(t.Context(), p.closeGap)
	}
	hold(t.Context(), p.tail)

	sc.reconcile(l, 0, fmt.Sprintf("rounds=%d closed_ingest=%d closed_processor=%d", p.closes, total[ingestConnection], total[processorConnection]))
}

// closeConnections closes the services' connections once they are all
// open: it lists and closes until at least one ingest and one processor
// connection were closed in this round, for up to 30 seconds.
func (sc *scenario) closeConnections(round int) map[string]int {
	sc.t.Helper()
	ctx, cancel := context.WithTimeout(sc.t.Context(), 30*time.Second)
	defer cancel()
	closed := map[string]int{}
	for closed[ingestConnection] == 0 || closed[processorConnection] == 0 {
		got, err := sc.suite.node.closeConnections(ctx, ingestConnection, processorConnection)
		if err != nil {
			sc.t.Fatalf("round %d: %v", round, err)
		}
		for name, n := range got {
			closed[name] += n
		}
		if ctx.Err() != nil {
			sc.t.Fatalf("round %d: closed %v within 30s, want at least one connection of each service; they did not reconnect", round, closed)
		}
		if closed[ingestConnection] == 0 || closed[processorConnection] == 0 {
			hold(ctx, 200*time.Millisecond)
		}
	}
	return closed
}

// TestProcessKill kills a processor with SIGKILL under load and starts
// another. Then it stops the broker application so that ingest spools,
// kills ingest with SIGKILL while the spool holds webhooks, starts the
// broker application and a new ingest on the same spool directory, and
// checks that the spooled webhooks arrive.
func TestProcessKill(t *testing.T) {
	s := setup(t)
	p := s.profile()
	sc := newScenario(t, s)
	sc.startProcessor()
	sc.startProcessor()
	ingest := sc.startIngest()
	l := sc.startLoad(p.load)
	hold(t.Context(), p.warmup)

	var spooledBeforeKill []string
	for range p.killRounds {
		victim := sc.runningProcessors()[0]
		victim.kill(t)
		sc.startProcessor()
		hold(t.Context(), p.warmup)

		if !s.spool {
			continue
		}
		sc.stopApp()
		sc.waitSpooled(minSpooled)
		ingest.kill(t)
		// Every spooled response so far came from an ingest that is now
		// dead, because a new one starts only after this point.
		spooledBeforeKill = l.spooledIDs()
		sc.startApp()
		ingest = sc.startIngest()
		hold(t.Context(), p.warmup)
	}
	hold(t.Context(), p.tail)

	extra := "spool_kill=skipped"
	if s.spool {
		extra = fmt.Sprintf("spooled_before_ingest_kill=%d", len(spooledBeforeKill))
	}
	sc.reconcile(l, 0, "processor_kills="+fmt.Sprint(p.killRounds)+" "+extra)

	if !s.spool {
		msg := "ingest -h lists no HOOKBUS_SPOOL_DIR, so the ingest kill with a full spool did not run"
		if ciRun() {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if len(spooledBeforeKill) == 0 {
		t.Fatalf("no webhook got a 202 response with \"spooled\": true before ingest was killed")
	}
	if lost := sc.processed.missingFrom(spooledBeforeKill); lost > 0 {
		t.Errorf("%d of the %d webhooks spooled by the killed ingest were not processed", lost, len(spooledBeforeKill))
	}
}

// waitSpooled waits until the running ingest's spool holds at least n
// webhooks, for up to 30 seconds.
func (sc *scenario) waitSpooled(n int) {
	sc.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, ok := sc.spoolMessages()
		if ok && got >= n {
			return
		}
		if time.Now().After(deadline) {
			sc.t.Fatalf("ingest spool holds %d webhooks (gauge exported: %t) 30s after the broker stopped, want at least %d", got, ok, n)
		}
		time.Sleep(pollInterval) // polling interval of a condition with a deadline
	}
}

// TestMemoryAlarm raises the broker's memory alarm under load by lowering
// its memory high watermark, keeps it for the profile's alarm duration, and
// restores the watermark read before.
func TestMemoryAlarm(t *testing.T) {
	s := setup(t)
	p := s.profile()
	sc := newScenario(t, s)
	sc.startProcessor()
	sc.startProcessor()
	sc.startIngest()
	l := sc.startLoad(p.load)
	hold(t.Context(), p.warmup)

	node := s.node
	watermark, err := node.memoryWatermark(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Restores the watermark even when the test failed during an
		// alarm; setting the same value again is harmless.
		ctx, cancel := context.WithTimeout(context.Background(), ctlTimeout)
		defer cancel()
		if err := node.setMemoryWatermark(ctx, watermark...); err != nil {
			t.Errorf("restore memory high watermark %s: %v", strings.Join(watermark, " "), err)
		}
	})

	for range p.alarms {
		if err := node.setMemoryWatermark(t.Context(), p.alarmLevel); err != nil {
			t.Fatal(err)
		}
		sc.waitMemoryAlarm(true)
		hold(t.Context(), p.alarm)
		if err := node.setMemoryWatermark(t.Context(), watermark...); err != nil {
			t.Fatal(err)
		}
		sc.waitMemoryAlarm(false)
		hold(t.Context(), p.warmup)
	}
	hold(t.Context(), p.tail)

	sc.reconcile(l, 0, fmt.Sprintf("alarms=%d alarm=%s watermark=%s", p.alarms, p.alarm, strings.Join(watermark, " ")))
}

// waitMemoryAlarm waits until the node's memory alarm is on or off, for up
// to 30 seconds.
func (sc *scenario) waitMemoryAlarm(on bool) {
	sc.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := sc.suite.node.memoryAlarm(sc.t.Context())
		if err != nil {
			sc.t.Fatal(err)
		}
		if got == on {
			return
		}
		if time.Now().After(deadline) {
			sc.t.Fatalf("memory alarm still %s after 30s", onOff(got))
		}
		time.Sleep(pollInterval) // polling interval of a condition with a deadline
	}
}

// TestRouteQueueDelete deletes the default route's queue under its running
// consumers. The load pauses around the delete, so the queue is empty when
// it goes. Webhooks published before the consumers declare it again go to
// the unrouted queue. Messages in the queue at the delete are lost by that
// operator action, so at most that many may be missing.
func TestRouteQueueDelete(t *testing.T) {
	s := setup(t)
	p := s.profile()
	sc := newScenario(t, s)
	sc.startProcessor()
	sc.startProcessor()
	sc.startIngest()
	l := sc.startLoad(p.load)
	hold(t.Context(), p.warmup)

	queue := sc.names.RouteQueue(routeName)
	l.pause()
	ready, unacked := sc.waitQueueIdle(queue)
	deleted := sc.deleteQueue(queue)
	l.resume()
	sc.waitConsumers(queue, len(sc.runningProcessors()))
	hold(t.Context(), p.warmup+p.tail)

	inQueue := ready + unacked
	sc.reconcile(l, inQueue, fmt.Sprintf("deleted_with_queue=%d (ready %d, unacked %d, purged by the delete %d)", inQueue, ready, unacked, deleted))
}

// waitQueueIdle waits up to 30 seconds until the queue has no ready and no
// unacknowledged messages, and returns the counts it saw last.
func (sc *scenario) waitQueueIdle(queue string) (ready, unacked int) {
	sc.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ready, unacked, err := sc.suite.node.queueDepth(sc.t.Context(), queue)
		if err != nil {
			sc.t.Fatal(err)
		}
		if ready+unacked == 0 || time.Now().After(deadline) {
			return ready, unacked
		}
		time.Sleep(pollInterval) // polling interval of a condition with a deadline
	}
}

// deleteQueue deletes the queue, consumers and messages included, and
// returns the number of messages the broker reports it deleted.
func (sc *scenario) deleteQueue(queue string) int {
	sc.t.Helper()
	conn, err := amqp.Dial(sc.suite.node.url())
	if err != nil {
		sc.t.Fatal(err)
	}
	defer conn.Close()
	ch, err := conn.Channel()
	if err != nil {
		sc.t.Fatal(err)
	}
	purged, err := ch.QueueDelete(queue, false, false, false)
	if err != nil {
		sc.t.Fatalf("delete %s: %v", queue, err)
	}
	return purged
}

// waitConsumers waits up to 30 seconds until the queue exists again with
// the given number of consumers.
func (sc *scenario) waitConsumers(queue string, want int) {
	sc.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := sc.consumers(queue)
		if err == nil && got == want {
			return
		}
		if time.Now().After(deadline) {
			sc.t.Fatalf("%s has %d consumers 30s after its delete (last error: %v), want %d", queue, got, err, want)
		}
		time.Sleep(pollInterval) // polling interval of a condition with a deadline
	}
}

// consumers returns the consumer count of a queue from a passive declare.
func (sc *scenario) consumers(queue string) (int, error) {
	conn, err := amqp.Dial(sc.suite.node.url())
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
	return q.Consumers, nil
}

// TestGracefulShutdown sends SIGTERM to ingest and both processors at once
// under load. Each must exit with status 0 within its grace period. A new
// processor and ingest then take over what is left.
func TestGracefulShutdown(t *testing.T) {
	s := setup(t)
	p := s.profile()
	sc := newScenario(t, s)
	sc.startProcessor()
	sc.startProcessor()
	sc.startIngest()
	l := sc.startLoad(p.load)
	hold(t.Context(), p.warmup)

	services := append(sc.runningIngests(), sc.runningProcessors()...)
	start := time.Now()
	for _, svc := range services {
		svc.signal(t, syscall.SIGTERM)
	}
	var exits []string
	for _, svc := range services {
		code := svc.wait(t, exitTimeout)
		elapsed := time.Since(start)
		exits = append(exits, fmt.Sprintf("%s:%d/%s", svc.name, code, elapsed.Round(time.Millisecond)))
		if code != 0 {
			t.Errorf("%s exited with status %d after SIGTERM, want 0", svc.name, code)
		}
		if elapsed > shutdownGrace {
			t.Errorf("%s exited %s after SIGTERM, want within its grace period of %s", svc.name, elapsed.Round(time.Millisecond), shutdownGrace)
		}
	}
	// Requests sent while no ingest listens fail; they are not accepted.
	hold(t.Context(), 2*time.Second)
	l.stop()

	sc.startProcessor()
	sc.startIngest()
	sc.reconcile(l, 0, "exits="+strings.Join(exits, ","))
}

// TestSlowHeaderClients holds 1,000 connections to ingest that send part of
// a request line and then nothing, and checks that signed webhooks sent
// meanwhile are all accepted.
func TestSlowHeaderClients(t *testing.T) {
	const (
		slowConnections = 1000
		dialsPerSlot    = 10
		loadDuration    = 15 * time.Second
	)
	s := setup(t)
	sc := newScenario(t, s)
	sc.startProcessor()
	sc.startIngest()

	slow := startSlowClients(sc.ingestAddr, slowConnections, dialsPerSlot)
	t.Cleanup(slow.stop)
	deadline := time.Now().Add(30 * time.Second)
	for slow.open() < slowConnections {
		if time.Now().After(deadline) {
			t.Fatalf("%d slow connections open after 30s, want %d (dial errors: %d)", slow.open(), slowConnections, slow.dialErrors.Load())
		}
		time.Sleep(pollInterval) // polling interval of a condition with a deadline
	}

	l := sc.startLoad(loadConfig{rate: 100, workers: 8})
	hold(t.Context(), loadDuration)
	l.stop()
	openAtEnd := slow.open()
	slow.stop()

	p50, p99, maximum := l.latencies()
	tl := sc.reconcile(l, 0, fmt.Sprintf("slow_open_at_end=%d slow_dials=%d closed_by_ingest=%d p50=%s p99=%s max=%s",
		openAtEnd, slow.opened.Load(), slow.closedByServer.Load(),
		p50.Round(time.Millisecond), p99.Round(time.Millisecond), maximum.Round(time.Millisecond)))
	if notAccepted := tl.sent - tl.accepted; notAccepted > 0 {
		statuses := map[int]int{}
		var errs []string
		for id, o := range l.results() {
			if o.accepted() {
				continue
			}
			statuses[o.status]++
			if o.err != "" && len(errs) < 5 {
				errs = append(errs, id+": "+o.err)
			}
		}
		t.Errorf("%d of %d webhooks not accepted during the slow connections (by status, 0 for no response: %v), want all accepted; errors:\n  %s",
			notAccepted, tl.sent, statuses, strings.Join(errs, "\n  "))
	}
}

// stopApp stops the broker application and registers, once per scenario,
// a cleanup that starts it again if the test ends while it is stopped.
func (sc *scenario) stopApp() {
	sc.t.Helper()
	if err := sc.suite.node.stopApp(sc.t.Context()); err != nil {
		sc.t.Fatal(err)
	}
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if !sc.restoresApp {
		sc.restoresApp = true
		sc.t.Cleanup(sc.restoreApp)
	}
}

// startApp starts the broker application and waits for its AMQP port.
func (sc *scenario) startApp() {
	sc.t.Helper()
	if err := sc.suite.node.startApp(sc.t.Context()); err != nil {
		sc.t.Fatal(err)
	}
}

// restoreApp starts the broker application when it does not accept
// connections, so that the next test finds it running.
func (sc *scenario) restoreApp() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*ctlTimeout)
	defer cancel()
	probe, probeCancel := context.WithTimeout(ctx, 2*time.Second)
	defer probeCancel()
	if sc.suite.node.awaitAMQP(probe) == nil {
		return
	}
	if err := sc.suite.node.startApp(ctx); err != nil {
		sc.t.Errorf("start the broker application again: %v", err)
	}
}

// ciRun reports whether the tests run under CI=true.
func ciRun() bool {
	return os.Getenv("CI") == "true"
}
