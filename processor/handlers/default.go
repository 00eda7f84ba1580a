// Package handlers holds the processor's built-in routes.
package handlers

import (
	"context"
	"log/slog"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/topology"
)

// DefaultRouteName is the name of the route that DefaultRoute returns. Its
// queue is <namespace>.route.default.
const DefaultRouteName = "default"

// DefaultRoute returns the route "default", which binds "#" and so receives
// every event. Its handler logs each event at info level with its message
// id, source, event type, body size in bytes and routing key. It logs neither
// the body nor the headers, and it always returns nil. A nil logger means
// slog.Default().
func DefaultRoute(logger *slog.Logger) consume.Route {
	if logger == nil {
		logger = slog.Default()
	}
	return consume.Route{
		Route: topology.Route{
			Name:     DefaultRouteName,
			Bindings: []string{"#"},
		},
		Handler: consume.HandlerFunc(func(ctx context.Context, msg *contract.Message) error {
			logger.LogAttrs(ctx, slog.LevelInfo, "event received",
				slog.String("message_id", msg.ID),
				slog.String("source", msg.Source),
				slog.String("event_type", msg.EventType),
				slog.Int("size_bytes", len(msg.Body)),
				slog.String("routing_key", msg.RoutingKey()),
			)
			return nil
		}),
	}
}
