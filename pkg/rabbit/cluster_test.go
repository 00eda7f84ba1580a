package rabbit_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/rabbittest"
)

func TestClientMovesToNextURL(t *testing.T) {
	url := rabbittest.URL(t)

	// The first node closes every connection at once.
	addr, accepted := closingListener(t)

	list := fmt.Sprintf("amqp://guest:guest@%s/, %s", addr, url)
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
