package webhook_test

// Plain `go test` runs only the seeds. To explore, run for example:
//
//	go test -run='^$' -fuzz='^FuzzInspect$' -fuzztime=20s ./webhook/

import (
	"net/http"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/hookbus/hookbus/ingest/webhook"
)

// maxDeliveryIDBytes is the longest delivery id Inspect may return, as its
// documentation states.
const maxDeliveryIDBytes = 200

func FuzzInspect(f *testing.F) {
	fixtures := []struct{ file, contentType string }{
		{"github/push.json", "application/json"},
		{"github/ping.json", "application/json"},
		{"stripe/invoice.paid.json", "application/json; charset=utf-8"},
		{"stripe/customer.updated.json", "application/json; charset=utf-8"},
		{"slack/url_verification.json", "application/json"},
		{"slack/event_callback.app_mention.json", "application/json"},
		{"slack/event_callback.message.channels.json", "application/json"},
		{"slack/block_actions.form", "application/x-www-form-urlencoded"},
		{"shopify/orders.create.json", "application/json"},
	}
	for _, fx := range fixtures {
		f.Add(fx.contentType, "", readFixture(f, fx.file))
	}
	f.Add("application/json", "msg_p5jXN8AQM9LWM0D4loKWxJek", []byte(`{"type":"contact.created"}`))
	f.Add("application/json", "", []byte("\xef\xbb\xbf{\"type\":\"a\",\"object\":\"event\",\"id\":\"evt_\\u0001\"}"))
	f.Add("application/x-www-form-urlencoded; charset=utf-8", "", []byte("payload=%7B%22type%22%3A1%7D&x=%zz"))
	f.Add("text/plain", "id\x00", []byte(`{"type":"event_callback","event":{"type":[]},"event_id":"\u0085"}`))

	f.Fuzz(func(t *testing.T, contentType, headerID string, body []byte) {
		header := http.Header{}
		header.Set("Content-Type", contentType)
		if headerID != "" {
			header.Set("Webhook-Id", headerID)
		}
		before := string(body)

		ev := webhook.Inspect(header, body)

		if ev.DeliveryID != "" {
			checkDeliveryID(t, ev.DeliveryID)
		}
		if headerID != "" && ev.DeliveryID != "" && ev.DeliveryID != headerID {
			t.Errorf("DeliveryID = %q, want the webhook-id header %q or empty", ev.DeliveryID, headerID)
		}
		if string(body) != before {
			t.Error("Inspect changed the body")
		}
		if again := webhook.Inspect(header, body); again != ev {
			t.Errorf("second Inspect = %+v, first = %+v", again, ev)
		}
	})
}

// checkDeliveryID fails unless id can be an AMQP message id as Inspect
// promises: valid UTF-8, at most maxDeliveryIDBytes, no control character.
func checkDeliveryID(t *testing.T, id string) {
	t.Helper()
	if len(id) > maxDeliveryIDBytes {
		t.Errorf("DeliveryID has %d bytes, limit %d", len(id), maxDeliveryIDBytes)
	}
	if !utf8.ValidString(id) {
		t.Errorf("DeliveryID %q is not valid UTF-8", id)
	}
	for _, r := range id {
		if unicode.IsControl(r) {
			t.Errorf("DeliveryID %q contains control character %U", id, r)
		}
	}
}
