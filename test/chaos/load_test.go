//go:build linux

package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hookbus/hookbus/ingest/verify"
)

// Load settings. The rate is steady: ticks that find every worker busy are
// skipped rather than made up later, so an outage does not cause a burst.
const (
	// requestTimeout bounds one request. Ingest responds within its
	// publish timeout unless it is stopped, blocked or killed.
	requestTimeout = 15 * time.Second
	// maxLoadDuration bounds every load run, even one that its test
	// never stops.
	maxLoadDuration = 30 * time.Minute
	// bodyPadding makes each webhook body about 1 KiB.
	bodyPadding = 900
	// idleConnTimeout closes the sender's idle keep-alive connections
	// before ingest does. Ingest closes a connection that sends no request
	// within its ReadHeaderTimeout of 5 seconds, counted from the accept
	// (Go 1.26 net/http). The Transport may keep an unused connection in
	// its idle pool, because it dials one for a request that another
	// connection served meanwhile. A request written to such a connection
	// as ingest closes it fails with EOF, and a POST is not retried.
	idleConnTimeout = 4 * time.Second
)

// loadConfig sets the shape of a load run.
type loadConfig struct {
	rate    int // requests per second
	workers int // concurrent requests at most
}

// outcome is what one request got.
type outcome struct {
	status  int  // HTTP status, 0 when the request failed without a response
	spooled bool // a 2xx body reported "spooled": true
	latency time.Duration
	err     string // the error of a request without a response
}

func (o outcome) accepted() bool { return o.status >= 200 && o.status < 300 }

// load sends signed GitHub webhooks to ingest at a steady rate from a fixed
// number of workers over keep-alive connections, each with a distinct
// X-GitHub-Delivery, which ingest uses as the message id. It records every
// id with the outcome of its request.
type load struct {
	t      *testing.T
	cfg    loadConfig
	url    string
	prefix string
	client *http.Client

	paused   atomic.Bool
	inflight atomic.Int64
	seq      atomic.Int64

	cancel context.CancelFunc
	done   chan struct{} // closed when every worker has returned

	mu       sync.Mutex
	outcomes map[string]outcome
}

// startLoad starts sending to the scenario's ingest address until stop is
// called or maxLoadDuration passes.
func (sc *scenario) startLoad(cfg loadConfig) *load {
	sc.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), maxLoadDuration)
	l := &load{
		t:      sc.t,
		cfg:    cfg,
		url:    "http://" + sc.ingestAddr + "/webhooks/github",
		prefix: sc.names.Namespace(),
		client: &http.Client{
			Timeout: requestTimeout,
			Transport: &http.Transport{
				DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
				MaxIdleConns:        cfg.workers,
				MaxIdleConnsPerHost: cfg.workers,
				IdleConnTimeout:     idleConnTimeout,
			},
		},
		cancel:   cancel,
		done:     make(chan struct{}),
		outcomes: map[string]outcome{},
	}
	l.run(ctx)
	sc.t.Cleanup(l.stop)
	return l
}

// run starts a ticker goroutine that hands out one token per request and
// the workers that take them. It returns at once; done is closed when all
// have returned.
func (l *load) run(ctx context.Context) {
	tokens := make(chan struct{}, l.cfg.workers)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(tokens)
		ticker := time.NewTicker(time.Second / time.Duration(l.cfg.rate))
		defer ticker.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
			if l.paused.Load() {
				continue
			}
			select {
			case tokens <- struct{}{}:
			default:
			}
		}
	}()
	for range l.cfg.workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range tokens {
				l.send(ctx)
			}
		}()
	}
	go func() {
		wg.Wait()
		l.client.CloseIdleConnections()
		close(l.done)
	}()
}

// send posts one webhook and records its outcome.
func (l *load) send(ctx context.Context) {
	l.inflight.Add(1)
	defer l.inflight.Add(-1)
	id := fmt.Sprintf("%s-%07d", l.prefix, l.seq.Add(1))
	body := webhookBody(id)
	header, err := verify.Sign("github", []byte(githubSecret), body, time.Now(), verify.Options{})
	if err != nil {
		l.t.Errorf("sign webhook: %v", err)
		return
	}
	// The request does not end with ctx: a stopped load lets the requests
	// under way finish, so that each recorded outcome is the real one.
	req, err := http.NewRequestWithContext(context.WithoutCancel(ctx), http.MethodPost, l.url, bytes.NewReader(body))
	if err != nil {
		l.t.Errorf("build request: %v", err)
		return
	}
	req.Header = header
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "hookbus-chaos-test")
	req.Header.Set("X-GitHub-Event", "push")
	req.Header.Set("X-GitHub-Delivery", id)

	// The connection's history explains most failures without a
	// response: a keep-alive connection that ingest closed just as the
	// request went out.
	var conn httptrace.GotConnInfo
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		GotConn: func(info httptrace.GotConnInfo) { conn = info },
	}))
	start := time.Now()
	resp, err := l.client.Do(req)
	o := outcome{latency: time.Since(start)}
	if err != nil {
		o.err = fmt.Sprintf("%v (connection from the idle pool: %t, idle for %s)", err, conn.WasIdle, conn.IdleTime.Round(time.Millisecond))
	} else {
		o.status = resp.StatusCode
		var answer struct {
			Spooled bool `json:"spooled"`
		}
		data, readErr := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if o.accepted() {
			if readErr != nil || json.Unmarshal(data, &answer) != nil {
				// The status came, so ingest accepted the webhook
				// even when the body was cut short.
				l.t.Logf("webhook %s: status %d with an unreadable body: %v", id, o.status, readErr)
			}
			o.spooled = answer.Spooled
		}
	}
	l.mu.Lock()
	l.outcomes[id] = o
	l.mu.Unlock()
}

// webhookBody returns a GitHub push payload of about 1 KiB for the id.
func webhookBody(id string) []byte {
	body, _ := json.Marshal(map[string]any{
		"ref":     "refs/heads/main",
		"after":   id,
		"pusher":  map[string]string{"name": "chaos"},
		"padding": string(bytes.Repeat([]byte("x"), bodyPadding)),
	})
	return body
}

// pause stops handing out new requests and waits until the requests under
// way have finished. resume starts them again.
func (l *load) pause() {
	l.t.Helper()
	l.paused.Store(true)
	deadline := time.Now().Add(requestTimeout + 5*time.Second)
	for l.inflight.Load() > 0 {
		if time.Now().After(deadline) {
			l.t.Fatalf("requests still under way %s after the load paused", requestTimeout+5*time.Second)
		}
		time.Sleep(10 * time.Millisecond) // polling interval of a counter with a deadline
	}
}

func (l *load) resume() {
	l.paused.Store(false)
}

// stop ends the load and waits until every request under way has its
// outcome. It may be called more than once.
func (l *load) stop() {
	l.cancel()
	<-l.done
}

// results returns a copy of the recorded outcomes by id.
func (l *load) results() map[string]outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string]outcome, len(l.outcomes))
	for id, o := range l.outcomes {
		out[id] = o
	}
	return out
}

// acceptedIDs returns the ids of the requests that got a 2xx response.
func (l *load) acceptedIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id, o := range l.outcomes {
		if o.accepted() {
			ids = append(ids, id)
		}
	}
	return ids
}

// spooledIDs returns the ids of the requests that got a 2xx response with
// "spooled": true.
func (l *load) spooledIDs() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var ids []string
	for id, o := range l.outcomes {
		if o.spooled {
			ids = append(ids, id)
		}
	}
	return ids
}

// latencies returns the 50th and 99th percentile and the maximum latency of
// the accepted requests.
func (l *load) latencies() (p50, p99, maximum time.Duration) {
	var all []time.Duration
	for _, o := range l.results() {
		if o.accepted() {
			all = append(all, o.latency)
		}
	}
	if len(all) == 0 {
		return 0, 0, 0
	}
	slices.Sort(all)
	return all[len(all)*50/100], all[min(len(all)*99/100, len(all)-1)], all[len(all)-1]
}

// slowClients holds TCP connections to ingest that send the start of a
// request line and then nothing, as a slow or malicious client would. When
// ingest closes one (its ReadHeaderTimeout), the slot dials again, up to
// maxDials per slot, so that the connections stay open while the test runs.
type slowClients struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	opened         atomic.Int64
	closedByServer atomic.Int64
	dialErrors     atomic.Int64

	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

// startSlowClients opens count slow connections to addr.
func startSlowClients(addr string, count, maxDials int) *slowClients {
	ctx, cancel := context.WithCancel(context.Background())
	c := &slowClients{cancel: cancel, conns: map[net.Conn]struct{}{}}
	for range count {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for range maxDials {
				if ctx.Err() != nil {
					return
				}
				c.hold(ctx, addr)
			}
		}()
	}
	return c
}

// hold dials addr, sends a partial request line and waits until ingest
// closes the connection or ctx is done.
func (c *slowClients) hold(ctx context.Context, addr string) {
	dialer := net.Dialer{Timeout: 5 * time.Second}
	conn, err := dialer.DialContext(ctx, "tcp", addr)
	if err != nil {
		c.dialErrors.Add(1)
		// A refused or failed dial is retried after a pause, not at once.
		hold(ctx, 100*time.Millisecond)
		return
	}
	c.opened.Add(1)
	c.mu.Lock()
	c.conns[conn] = struct{}{}
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		delete(c.conns, conn)
		c.mu.Unlock()
		_ = conn.Close()
	}()
	stop := context.AfterFunc(ctx, func() { _ = conn.Close() })
	defer stop()

	if _, err := conn.Write([]byte("POST /webhooks/gith")); err != nil {
		return
	}
	buf := make([]byte, 512)
	for {
		if _, err := conn.Read(buf); err != nil {
			// Only stop closes connections from this side, so an error
			// before ctx is done means ingest closed or reset it.
			if ctx.Err() == nil {
				c.closedByServer.Add(1)
			}
			return
		}
	}
}

// open returns the number of connections open at the moment.
func (c *slowClients) open() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.conns)
}

// stop closes every connection and waits for the slots to return.
func (c *slowClients) stop() {
	c.cancel()
	c.wg.Wait()
}
