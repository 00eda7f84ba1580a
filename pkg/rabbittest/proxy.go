package rabbittest

import (
	"errors"
	"io"
	"net"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/hookbus/hookbus/pkg/rabbit"
)

// MaxProxyConnections is the number of client connections a Proxy forwards
// at once. It resets further connections, so that a test that leaks
// connections fails instead of exhausting the machine.
const MaxProxyConnections = 64

// proxyDialTimeout bounds the proxy's connect to its target.
const proxyDialTimeout = 5 * time.Second

// Proxy is a TCP proxy between a test's clients and a broker. Cut makes the
// broker look unavailable to everything connected through the proxy, without
// stopping the broker, which other tests share. Its methods are safe for
// concurrent use.
type Proxy struct {
	tb       testing.TB
	target   string
	listener net.Listener
	wg       sync.WaitGroup // the accept loop and every connection's goroutines

	// mu guards cut, closed and conns.
	mu     sync.Mutex
	cut    bool
	closed bool
	// conns holds the open connections on both sides of the proxy, two
	// for each client connection.
	conns map[net.Conn]struct{}
}

// NewProxy starts a proxy on 127.0.0.1 with a free port that forwards every
// connection to target (host:port). The test's cleanup closes the proxy and
// all its connections and waits for its goroutines.
func NewProxy(tb testing.TB, target string) *Proxy {
	tb.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("proxy: listen: %v", err)
	}
	p := &Proxy{tb: tb, target: target, listener: listener, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.accept()
	}()
	tb.Cleanup(p.close)
	return p
}

// Addr returns the proxy's host:port.
func (p *Proxy) Addr() string {
	return p.listener.Addr().String()
}

// URL returns brokerURL with its host and port replaced by the proxy's, so
// that a client dialing it connects through the proxy. It fails the test
// when brokerURL cannot be parsed, so call it from the test's goroutine.
func (p *Proxy) URL(brokerURL string) string {
	p.tb.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		p.tb.Fatalf("proxy: parse broker URL %s: %v", rabbit.RedactURL(brokerURL), err)
	}
	u.Host = p.Addr()
	return u.String()
}

// Cut resets every connection through the proxy and resets new connections
// as soon as they are accepted, until Restore. A client sees its connection
// lost and its dials fail, as during a broker outage. The listener stays
// open, so that no other program can take the port before Restore.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = true
	for conn := range p.conns {
		reset(conn)
	}
}

// Restore forwards new connections again after Cut. Connections that Cut
// reset stay closed, so clients must reconnect.
func (p *Proxy) Restore() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = false
}

// close stops the proxy, closes all connections and waits for the
// goroutines to return.
func (p *Proxy) close() {
	p.mu.Lock()
	p.closed = true
	_ = p.listener.Close()
	for conn := range p.conns {
		_ = conn.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	for {
		client, err := p.listener.Accept()
		if err != nil {
			// Accept fails for good once close has closed the listener.
			// Other errors, such as too many open files, would repeat,
			// so the proxy stops accepting and the test's clients time
			// out.
			return
		}
		if !p.track(client, true) {
			reset(client)
			continue
		}
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.forward(client)
		}()
	}
}

// track adds conn to the open connections and reports whether it may be
// used: not while the proxy is cut or closed, and for a client connection
// only below MaxProxyConnections.
func (p *Proxy) track(conn net.Conn, client bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cut || p.closed {
		return false
	}
	if client && len(p.conns) >= 2*MaxProxyConnections {
		return false
	}
	p.conns[conn] = struct{}{}
	return true
}

func (p *Proxy) untrack(conn net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.conns, conn)
}

// forward connects to the target and copies bytes both ways until either
// side closes, then closes both.
func (p *Proxy) forward(client net.Conn) {
	defer p.untrack(client)
	defer client.Close()

	upstream, err := net.DialTimeout("tcp", p.target, proxyDialTimeout)
	if err != nil {
		reset(client)
		return
	}
	defer p.untrack(upstream)
	defer upstream.Close()
	if !p.track(upstream, false) {
		reset(client)
		return
	}

	done := make(chan struct{})
	go func() {
		defer close(done)
		copyAndClose(client, upstream)
	}()
	copyAndClose(upstream, client)
	<-done
}

// copyAndClose copies from src to dst until either fails, then closes both,
// which ends the copy in the other direction.
func copyAndClose(dst, src net.Conn) {
	_, err := io.Copy(dst, src)
	if err != nil && !errors.Is(err, net.ErrClosed) {
		reset(dst)
		reset(src)
		return
	}
	_ = dst.Close()
	_ = src.Close()
}

// reset closes conn so that its peer gets a TCP RST rather than an orderly
// FIN, and sees the connection end abruptly.
func reset(conn net.Conn) {
	if tcp, ok := conn.(*net.TCPConn); ok {
		_ = tcp.SetLinger(0)
	}
	_ = conn.Close()
}

// HostPort returns the host:port of brokerURL, with AMQP's default port 5672
// (5671 for amqps) when the URL has none, as the target of NewProxy.
func HostPort(tb testing.TB, brokerURL string) string {
	tb.Helper()
	u, err := url.Parse(brokerURL)
	if err != nil {
		tb.Fatalf("parse broker URL %s: %v", rabbit.RedactURL(brokerURL), err)
	}
	if u.Port() != "" {
		return u.Host
	}
	port := "5672"
	if u.Scheme == "amqps" {
		port = "5671"
	}
	return net.JoinHostPort(u.Hostname(), port)
}
