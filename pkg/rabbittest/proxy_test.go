package rabbittest_test

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
	"go.uber.org/goleak"

	"github.com/hookbus/hookbus/pkg/rabbittest"
)

// TestMain fails the run when a goroutine outlives the tests, such as a
// proxy goroutine that its cleanup did not wait for.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// ioTimeout bounds every read, write and dial of these tests.
const ioTimeout = 5 * time.Second

// startEcho starts a TCP server on 127.0.0.1 that writes back what it reads,
// and stops it when the test ends.
func startEcho(t *testing.T) string {
	t.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := listener.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[conn] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				_, _ = io.Copy(conn, conn)
			}()
		}
	}()
	t.Cleanup(func() {
		_ = listener.Close()
		mu.Lock()
		for conn := range conns {
			_ = conn.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return listener.Addr().String()
}

// dial connects to addr and closes the connection when the test ends.
func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// echo writes message to conn and reads it back.
func echo(conn net.Conn, message string) error {
	if err := conn.SetDeadline(time.Now().Add(ioTimeout)); err != nil {
		return err
	}
	if _, err := io.WriteString(conn, message); err != nil {
		return err
	}
	buf := make([]byte, len(message))
	if _, err := io.ReadFull(conn, buf); err != nil {
		return err
	}
	if string(buf) != message {
		return errors.New("echo returned " + string(buf))
	}
	return nil
}

// echoThrough dials addr and checks one echo round trip, returning its error.
func echoThrough(t *testing.T, addr string) error {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, ioTimeout)
	if err != nil {
		return err
	}
	defer conn.Close()
	return echo(conn, "ping")
}

func TestProxyForwards(t *testing.T) {
	proxy := rabbittest.NewProxy(t, startEcho(t))
	conn := dial(t, proxy.Addr())
	for _, message := range []string{"hello", "a longer message\x00\xff", "again"} {
		if err := echo(conn, message); err != nil {
			t.Fatalf("echo %q through the proxy: %v", message, err)
		}
	}
}

func TestProxyCutAndRestore(t *testing.T) {
	proxy := rabbittest.NewProxy(t, startEcho(t))
	before := dial(t, proxy.Addr())
	if err := echo(before, "ping"); err != nil {
		t.Fatalf("echo before Cut: %v", err)
	}

	proxy.Cut()

	if err := echo(before, "ping"); err == nil {
		t.Error("a connection opened before Cut still forwards")
	}
	if err := echoThrough(t, proxy.Addr()); err == nil {
		t.Error("a connection opened after Cut forwards")
	}

	proxy.Restore()

	if err := echoThrough(t, proxy.Addr()); err != nil {
		t.Errorf("echo after Restore: %v", err)
	}
	if err := echo(before, "ping"); err == nil {
		t.Error("a connection that Cut reset forwards again after Restore")
	}
}

func TestProxyConnectionLimit(t *testing.T) {
	proxy := rabbittest.NewProxy(t, startEcho(t))
	for i := range rabbittest.MaxProxyConnections {
		if err := echo(dial(t, proxy.Addr()), "ping"); err != nil {
			t.Fatalf("echo on connection %d: %v", i, err)
		}
	}
	if err := echoThrough(t, proxy.Addr()); err == nil {
		t.Errorf("connection %d forwards, above MaxProxyConnections", rabbittest.MaxProxyConnections+1)
	}
}

func TestProxyCleanupCloses(t *testing.T) {
	target := startEcho(t)
	var addr string
	var conn net.Conn
	outer := t
	t.Run("proxy", func(t *testing.T) {
		proxy := rabbittest.NewProxy(t, target)
		addr = proxy.Addr()
		// The connection belongs to the outer test, so that only the
		// proxy's cleanup can close it when this subtest ends.
		conn = dial(outer, addr)
		if err := echo(conn, "ping"); err != nil {
			t.Fatalf("echo: %v", err)
		}
	})
	if _, err := net.DialTimeout("tcp", addr, ioTimeout); err == nil {
		t.Error("the proxy still accepts connections after its test ended")
	}
	if err := echo(conn, "ping"); err == nil {
		t.Error("a connection through the proxy still forwards after its test ended")
	}
}

func TestProxyURL(t *testing.T) {
	proxy := rabbittest.NewProxy(t, "127.0.0.1:1")
	got := proxy.URL("amqp://user:secret@broker.example:5672/vhost")
	want := "amqp://user:secret@" + proxy.Addr() + "/vhost"
	if got != want {
		t.Errorf("URL = %q, want %q", got, want)
	}

	tests := []struct{ url, want string }{
		{"amqp://guest:guest@127.0.0.1:5672/", "127.0.0.1:5672"},
		{"amqp://guest:guest@localhost/", "localhost:5672"},
		{"amqps://broker.example/", "broker.example:5671"},
		{"amqp://[::1]:5673/", "[::1]:5673"},
	}
	for _, tt := range tests {
		if got := rabbittest.HostPort(t, tt.url); got != tt.want {
			t.Errorf("HostPort(%q) = %q, want %q", tt.url, got, tt.want)
		}
	}
}

func TestProxyBrokerOutage(t *testing.T) {
	url := rabbittest.URL(t)
	proxy := rabbittest.NewProxy(t, rabbittest.HostPort(t, url))
	proxied := proxy.URL(url)

	conn, err := amqp.DialConfig(proxied, amqp.Config{Dial: amqp.DefaultDial(ioTimeout)})
	if err != nil {
		t.Fatalf("dial the broker through the proxy: %v", err)
	}
	defer conn.Close()
	closed := conn.NotifyClose(make(chan *amqp.Error, 1))
	ch, err := conn.Channel()
	if err != nil {
		t.Fatalf("open channel: %v", err)
	}
	if err := ch.ExchangeDeclarePassive("amq.direct", "direct", true, false, false, false, nil); err != nil {
		t.Fatalf("inspect amq.direct through the proxy: %v", err)
	}

	proxy.Cut()

	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the AMQP connection did not notice the cut within 10s")
	}
	if c, err := amqp.DialConfig(proxied, amqp.Config{Dial: amqp.DefaultDial(ioTimeout)}); err == nil {
		_ = c.Close()
		t.Fatal("dial through a cut proxy succeeded")
	}

	proxy.Restore()

	again, err := amqp.DialConfig(proxied, amqp.Config{Dial: amqp.DefaultDial(ioTimeout)})
	if err != nil {
		t.Fatalf("dial after Restore: %v", err)
	}
	defer again.Close()
	ch, err = again.Channel()
	if err != nil {
		t.Fatalf("open channel after Restore: %v", err)
	}
	if err := ch.ExchangeDeclarePassive("amq.direct", "direct", true, false, false, false, nil); err != nil {
		t.Errorf("inspect amq.direct after Restore: %v", err)
	}
}
