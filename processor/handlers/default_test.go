package handlers_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/processor/handlers"
)

func TestDefaultRouteBindsEverything(t *testing.T) {
	route := handlers.DefaultRoute(nil)

	if route.Name != "default" {
		t.Errorf("Name = %q, want %q", route.Name, "default")
	}
	if len(route.Bindings) != 1 || route.Bindings[0] != "#" {
		t.Errorf("Bindings = %q, want [#]", route.Bindings)
	}
	if route.Handler == nil {
		t.Fatal("Handler is nil")
	}
}

func TestDefaultRouteLogsEventWithoutBody(t *testing.T) {
	var out bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&out, nil))
	route := handlers.DefaultRoute(logger)
	msg := &contract.Message{
		ID:          "delivery-1",
		Source:      "shopify",
		EventType:   "orders/create",
		ContentType: "application/json",
		ReceivedAt:  time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC),
		Header:      http.Header{"X-Shopify-Hmac-Sha256": {"c2lnbmF0dXJl"}},
		Body:        []byte(`{"secret_field":"do-not-log"}`),
	}

	if err := route.Handler.Handle(context.Background(), msg); err != nil {
		t.Fatalf("Handle returned %v, want nil", err)
	}

	var entry map[string]any
	if err := json.Unmarshal(out.Bytes(), &entry); err != nil {
		t.Fatalf("log output %q is not one JSON object: %v", out.String(), err)
	}
	want := map[string]any{
		"level":       "INFO",
		"msg":         "event received",
		"message_id":  "delivery-1",
		"source":      "shopify",
		"event_type":  "orders/create",
		"size_bytes":  float64(len(msg.Body)),
		"routing_key": "shopify.orders.create",
	}
	for key, value := range want {
		if entry[key] != value {
			t.Errorf("log attribute %s = %v, want %v", key, entry[key], value)
		}
	}
	if strings.Contains(out.String(), "do-not-log") {
		t.Errorf("log output contains the body: %s", out.String())
	}
	if strings.Contains(out.String(), "c2lnbmF0dXJl") {
		t.Errorf("log output contains a request header value: %s", out.String())
	}
}

func TestDefaultRouteLogsNothingBelowInfo(t *testing.T) {
	var out bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&out, &slog.HandlerOptions{Level: slog.LevelWarn}))
	route := handlers.DefaultRoute(logger)
	msg := &contract.Message{ID: "delivery-2", Source: "github", EventType: "push", Body: []byte("{}")}

	if err := route.Handler.Handle(context.Background(), msg); err != nil {
		t.Fatalf("Handle returned %v, want nil", err)
	}
	if out.Len() != 0 {
		t.Errorf("log output at level warn = %q, want none", out.String())
	}
}

// ExampleDefaultRoute runs the default route's handler on one event, as the
// processor does for every message of the route's queue.
func ExampleDefaultRoute() {
	// Drop the time so that the output is the same on every run.
	logger := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{
		ReplaceAttr: func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return a
		},
	}))
	route := handlers.DefaultRoute(logger)

	msg := &contract.Message{
		ID:        "3f1c2a9e",
		Source:    "github",
		EventType: "pull_request",
		Body:      []byte(`{"action":"opened"}`),
	}
	_ = route.Handler.Handle(context.Background(), msg)
	// Output:
	// level=INFO msg="event received" message_id=3f1c2a9e source=github event_type=pull_request size_bytes=19 routing_key=github.pull_request
}
