package rabbit_test

import (
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/rabbittest"
)

func TestClientMovesToNextURL(t *testing.T) {
	url := rabbittest.URL(t)

	// The first "node" accepts TCP connections and closes them at once,
	// like a node that is going down.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	var accepted atomic.Int32
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			_ = conn.Close()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})

	list := fmt.Sprintf("amqp://guest:guest@%s/, %s", ln.Addr(), url)
	client := newClient(t, list, nil)
	stop := background(t, client.Run)

	waitFor(t, "the client is connected through the second URL", client.Connected)
	if got := accepted.Load(); got < 1 {
		t.Errorf("first URL got %d connection attempts, want at least 1", got)
	}
	if err := stop(); err != nil {
		t.Errorf("Run after cancel = %v, want nil", err)
	}
}

func TestSplitURLs(t *testing.T) {
	got := rabbit.SplitURLs(" amqp://a:5672/ ,,amqp://b:5672/,")
	want := []string{"amqp://a:5672/", "amqp://b:5672/"}
	if !slices.Equal(got, want) {
		t.Errorf("SplitURLs = %q, want %q", got, want)
	}
}

func TestRedactURLList(t *testing.T) {
	got := rabbit.RedactURL("amqp://u:secret1@a:5672/,amqps://u:secret2@b:5671/")
	want := "amqp://u:xxxxx@a:5672/,amqps://u:xxxxx@b:5671/"
	if got != want {
		t.Errorf("RedactURL = %q, want %q", got, want)
	}
}
