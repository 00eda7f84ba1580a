package contract_test

import (
	"strings"
	"testing"

	"github.com/hookbus/hookbus/pkg/contract"
)

// maxRoutingKey is AMQP's limit for a routing key, a short string.
const maxRoutingKey = 255

func TestValidSource(t *testing.T) {
	tests := []struct {
		name   string
		source string
		want   bool
	}{
		{"empty", "", false},
		{"one byte", "a", true},
		{"64 bytes", strings.Repeat("a", 64), true},
		{"65 bytes", strings.Repeat("a", 65), false},
		{"digits, dash and underscore", "shop-2_eu", true},
		{"upper case", "GitHub", false},
		{"dot", "git.hub", false},
		{"slash", "git/hub", false},
		{"space", "git hub", false},
		{"star wildcard", "*", false},
		{"hash wildcard", "#", false},
		{"unicode letter", "gïthub", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := contract.ValidSource(tc.source); got != tc.want {
				t.Errorf("ValidSource(%q) = %v, want %v", tc.source, got, tc.want)
			}
		})
	}
}

func TestEventTypeKey(t *testing.T) {
	tests := []struct {
		eventType string
		want      string
	}{
		{"orders/create", "orders.create"},
		{"customer.subscription.updated", "customer.subscription.updated"},
		{"pull_request", "pull_request"},
		{"app_mention", "app_mention"},
		{"", "unknown"},
		{"///", "unknown"},
		{"...", "unknown"},
		{"Invoice.Paid", "invoice.paid"},
		{"PUSH", "push"},
		{"a b", "a.b"},
		{"a\tb", "a.b"},
		{"urn:event:created", "urn.event.created"},
		{"a//b", "a.b"},
		{"/leading/and/trailing/", "leading.and.trailing"},
		{"café", "caf__"},
		{"order#1*", "order_1_"},
		{"check-run", "check-run"},
	}
	for _, tc := range tests {
		t.Run(tc.eventType, func(t *testing.T) {
			if got := contract.EventTypeKey(tc.eventType); got != tc.want {
				t.Errorf("EventTypeKey(%q) = %q, want %q", tc.eventType, got, tc.want)
			}
		})
	}
}

func TestEventTypeKeyCutsLongType(t *testing.T) {
	source := strings.Repeat("s", contract.MaxSourceLength)
	tests := []struct {
		name      string
		eventType string
	}{
		{"one word", strings.Repeat("a", 1000)},
		{"words of nine", strings.Repeat("abcdefghi.", 100)},
		{"words of one", strings.Repeat("a.", 500)},
		{"slashes", strings.Repeat("ab/", 334)},
		{"multibyte", strings.Repeat("é", 500)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.eventType) < 1000 {
				t.Fatalf("test event type has %d bytes, want at least 1000", len(tc.eventType))
			}
			key := contract.RoutingKey(source, tc.eventType)
			if len(key) > maxRoutingKey {
				t.Errorf("routing key has %d bytes, want at most %d", len(key), maxRoutingKey)
			}
			if strings.HasSuffix(key, ".") {
				t.Errorf("routing key %q ends with a dot", key)
			}
			if !strings.HasPrefix(key, source+".") {
				t.Errorf("routing key %q does not start with the source and a dot", key)
			}
		})
	}
}

func TestRoutingKey(t *testing.T) {
	if got := contract.RoutingKey("shopify", "orders/create"); got != "shopify.orders.create" {
		t.Errorf("RoutingKey = %q, want shopify.orders.create", got)
	}
	m := &contract.Message{Source: "github", EventType: ""}
	if got := m.RoutingKey(); got != "github.unknown" {
		t.Errorf("Message.RoutingKey = %q, want github.unknown", got)
	}
}

func FuzzEventTypeKey(f *testing.F) {
	for _, seed := range []string{
		"orders/create", "customer.subscription.updated", "pull_request", "",
		"///", "a b", "Invoice.Paid", "café", strings.Repeat("ab.", 100),
		strings.Repeat("a", 189) + ".b", strings.Repeat("a", 188) + ".b",
	} {
		f.Add(seed)
	}
	source := strings.Repeat("s", contract.MaxSourceLength)

	f.Fuzz(func(t *testing.T, eventType string) {
		key := contract.EventTypeKey(eventType)

		if key == "" {
			t.Fatal("EventTypeKey returned an empty string")
		}
		for i := 0; i < len(key); i++ {
			c := key[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
				t.Fatalf("EventTypeKey(%q) = %q contains byte %q", eventType, key, c)
			}
		}
		if strings.HasPrefix(key, ".") || strings.HasSuffix(key, ".") {
			t.Fatalf("EventTypeKey(%q) = %q starts or ends with a dot", eventType, key)
		}
		if strings.Contains(key, "..") {
			t.Fatalf("EventTypeKey(%q) = %q contains an empty word", eventType, key)
		}
		if n := len(contract.RoutingKey(source, eventType)); n > maxRoutingKey {
			t.Fatalf("RoutingKey with a %d-byte source has %d bytes, want at most %d", len(source), n, maxRoutingKey)
		}
		if again := contract.EventTypeKey(key); again != key {
			t.Fatalf("EventTypeKey(%q) = %q, want the key unchanged", key, again)
		}
	})
}
