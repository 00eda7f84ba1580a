// Package rabbit keeps a connection to RabbitMQ open and publishes messages
// with publisher confirms. A Client owns one AMQP connection and replaces it
// when it is lost; a Publisher owns confirm-mode channels on that connection.
// Neither logs message bodies or the broker URL's password.
package rabbit

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// closeTimeout bounds the AMQP close handshake when Run stops.
const closeTimeout = 5 * time.Second

// Config configures a Client.
type Config struct {
	// URL is the broker's AMQP URL, for example
	// amqp://guest:guest@127.0.0.1:5672/. It may list several URLs
	// separated by commas, one per node of a cluster: each connection
	// attempt after a failure or a lost connection moves to the next one.
	URL string
	// TLS, when set, configures TLS for amqps:// URLs (CA, client
	// certificate, server name). Nil uses the system's roots and the
	// URL's host name.
	TLS *tls.Config
	// Name is the connection name shown in the management UI.
	Name string
	// Heartbeat is the AMQP heartbeat interval; zero means 10 seconds.
	Heartbeat time.Duration
	// DialTimeout bounds the TCP connect and AMQP handshake; zero means
	// 10 seconds.
	DialTimeout time.Duration
	// MinBackoff and MaxBackoff bound the wait between reconnection
	// attempts, which doubles from MinBackoff up to MaxBackoff with jitter.
	// Zero means 100 milliseconds and 15 seconds.
	MinBackoff, MaxBackoff time.Duration
	// Setup, when set, runs on every new connection before the Client
	// hands it out, typically to declare the topology. An error that
	// IsPermanent reports ends Run; any other error closes the connection
	// and Run tries again after a backoff.
	Setup func(conn *amqp.Connection) error
	// Logger receives connection events; nil means slog.Default().
	Logger *slog.Logger
}

// Client keeps one AMQP connection open while Run runs. It is safe for
// concurrent use.
type Client struct {
	cfg Config
	log *slog.Logger

	urls []string
	next int // index in urls of the next connection attempt; owned by Run

	// mu guards conn and changed.
	mu      sync.Mutex
	conn    *amqp.Connection
	changed chan struct{} // closed and replaced whenever conn changes

	blocked atomic.Bool
}

// NewClient returns a Client for cfg. It does not connect: call Run.
func NewClient(cfg Config) *Client {
	if cfg.Heartbeat == 0 {
		cfg.Heartbeat = 10 * time.Second
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = 10 * time.Second
	}
	if cfg.MinBackoff == 0 {
		cfg.MinBackoff = 100 * time.Millisecond
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 15 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Client{cfg: cfg, log: log, urls: SplitURLs(cfg.URL), changed: make(chan struct{})}
}

// SplitURLs returns the URLs of a comma-separated list, without white space
// and empty entries.
func SplitURLs(list string) []string {
	var urls []string
	for _, u := range strings.Split(list, ",") {
		if u = strings.TrimSpace(u); u != "" {
			urls = append(urls, u)
		}
	}
	return urls
}

// Run connects to the broker and reconnects whenever the connection is lost,
// until ctx is done; then it closes the connection and returns nil. It
// returns an error only when Setup fails permanently (see IsPermanent), for
// example when an existing queue has other arguments than the declaration.
func (c *Client) Run(ctx context.Context) error {
	backoff := c.cfg.MinBackoff
	for {
		conn, err := c.connect(ctx)
		if err != nil {
			if IsPermanent(err) {
				return err
			}
			wait := jitter(backoff)
			c.log.Warn("broker connection failed", "error", err, "retry_in", wait)
			if !sleep(ctx, wait) {
				return nil
			}
			backoff = min(backoff*2, c.cfg.MaxBackoff)
			continue
		}
		backoff = c.cfg.MinBackoff

		closed := conn.NotifyClose(make(chan *amqp.Error, 1))
		blocks := conn.NotifyBlocked(make(chan amqp.Blocking, 4))
		var watchers sync.WaitGroup
		watchers.Add(1)
		go func() {
			defer watchers.Done()
			c.watchBlocked(blocks)
		}()

		c.setConn(conn)
		c.log.Info("broker connected", "broker", RedactURL(c.urls[(c.next-1)%len(c.urls)]), "connection_name", c.cfg.Name)

		select {
		case <-ctx.Done():
			c.setConn(nil)
			// A broker that stopped responding would hold the close
			// handshake until the heartbeat timeout; the deadline bounds
			// shutdown instead, and also ends channel closes still
			// waiting on this connection.
			if err := conn.CloseDeadline(time.Now().Add(closeTimeout)); err != nil && !errors.Is(err, amqp.ErrClosed) {
				c.log.Warn("broker connection close failed", "error", err)
			}
			watchers.Wait()
			c.log.Info("broker connection closed")
			return nil
		case reason := <-closed:
			c.setConn(nil)
			watchers.Wait()
			c.log.Warn("broker connection lost, reconnecting", "broker", RedactURL(c.urls[(c.next-1)%len(c.urls)]), "reason", reason)
		}
	}
}

// connect dials the next URL of the list and runs Setup on the connection.
func (c *Client) connect(ctx context.Context) (*amqp.Connection, error) {
	if len(c.urls) == 0 {
		return nil, errors.New("rabbit: no broker URL configured")
	}
	url := c.urls[c.next%len(c.urls)]
	c.next++

	props := amqp.NewConnectionProperties()
	if c.cfg.Name != "" {
		props.SetClientConnectionName(c.cfg.Name)
	}
	var tlsConfig *tls.Config
	if c.cfg.TLS != nil {
		// amqp091-go writes the URL's host into an empty ServerName, so
		// each attempt gets its own copy.
		tlsConfig = c.cfg.TLS.Clone()
	}
	dial, stopDial := c.dialer(ctx)
	conn, err := amqp.DialConfig(url, amqp.Config{
		Heartbeat:       c.cfg.Heartbeat,
		Properties:      props,
		Dial:            dial,
		TLSClientConfig: tlsConfig,
	})
	stopDial()
	if err != nil {
		return nil, fmt.Errorf("dial %s: %w", RedactURL(url), err)
	}
	if c.cfg.Setup != nil {
		if err := c.cfg.Setup(conn); err != nil {
			_ = conn.Close()
			return nil, err
		}
	}
	return conn, nil
}

// dialer returns a dial function for amqp091-go that gives up when ctx is
// done, so that Run stops promptly during a slow connection attempt. Like
// amqp091-go's DefaultDial, it sets a deadline for the TLS and AMQP
// handshakes, which amqp091-go clears once the connection is open. When ctx
// ends during the handshakes, the deadline moves to now; the caller must
// call the returned stop function once DialConfig has returned.
func (c *Client) dialer(ctx context.Context) (dial func(network, addr string) (net.Conn, error), stop func()) {
	var mu sync.Mutex
	var stops []func() bool
	dial = func(network, addr string) (net.Conn, error) {
		dialCtx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
		defer cancel()
		var d net.Dialer
		conn, err := d.DialContext(dialCtx, network, addr)
		if err != nil {
			return nil, err
		}
		if err := conn.SetDeadline(time.Now().Add(c.cfg.DialTimeout)); err != nil {
			_ = conn.Close()
			return nil, err
		}
		mu.Lock()
		stops = append(stops, context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) }))
		mu.Unlock()
		return conn, nil
	}
	stop = func() {
		mu.Lock()
		defer mu.Unlock()
		for _, s := range stops {
			s()
		}
	}
	return dial, stop
}

func (c *Client) watchBlocked(blocks <-chan amqp.Blocking) {
	for b := range blocks {
		c.blocked.Store(b.Active)
		if b.Active {
			c.log.Warn("broker blocked the connection", "reason", b.Reason)
		} else {
			c.log.Info("broker unblocked the connection")
		}
	}
	c.blocked.Store(false)
}

func (c *Client) setConn(conn *amqp.Connection) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.conn = conn
	close(c.changed)
	c.changed = make(chan struct{})
}

// Connection returns the open connection, waiting for one until ctx is done.
// The connection may close at any time after it is returned; callers watch
// it with NotifyClose and call Connection again. Callers must not close it.
func (c *Client) Connection(ctx context.Context) (*amqp.Connection, error) {
	for {
		c.mu.Lock()
		conn, changed := c.conn, c.changed
		c.mu.Unlock()
		if conn != nil && !conn.IsClosed() {
			return conn, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Connected reports whether the client has an open connection.
func (c *Client) Connected() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.conn != nil && !c.conn.IsClosed()
}

// Blocked reports whether the broker has blocked the connection, which it
// does during a memory or disk alarm. Publishing on a blocked connection
// hangs until the alarm clears.
func (c *Client) Blocked() bool {
	return c.blocked.Load()
}

// IsPermanent reports whether err is a broker error that retrying cannot fix:
// 406 PRECONDITION_FAILED (an object exists with other arguments), 403
// ACCESS_REFUSED, or a failed login.
func IsPermanent(err error) bool {
	var amqpErr *amqp.Error
	if errors.As(err, &amqpErr) {
		return amqpErr.Code == amqp.PreconditionFailed || amqpErr.Code == amqp.AccessRefused
	}
	return errors.Is(err, amqp.ErrSASL) || errors.Is(err, amqp.ErrCredentials)
}

// RedactURL returns rawURL, or each URL of a comma-separated list, with
// its password replaced by "xxxxx", for logs.
func RedactURL(rawURL string) string {
	urls := SplitURLs(rawURL)
	for i, raw := range urls {
		u, err := url.Parse(raw)
		if err != nil {
			urls[i] = "(unparsable URL)"
			continue
		}
		urls[i] = u.Redacted()
	}
	return strings.Join(urls, ",")
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
