package service_test

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/topology"
	"github.com/hookbus/hookbus/processor/service"
)

// errUnknownOrder is the error of the program's own order system for an
// order it does not know.
var errUnknownOrder = errors.New("order not found")

// A program builds its own processor from the same configuration as the
// processor command and a route of its own. The route "shop-orders" receives
// every event of source "shop" whose type starts with "orders". Its handler
// parks a message at once with consume.Permanent; any other error would be
// retried later. The example needs a
// broker, so it has no Output comment and is compiled but not run by go test.
func Example() {
	var cfg service.Config
	if err := config.Load(&cfg); err != nil {
		slog.Error("invalid configuration", "error", err)
		os.Exit(2)
	}
	if err := cfg.Validate(); err != nil {
		slog.Error("invalid configuration", "error", err)
		os.Exit(2)
	}
	logger := cfg.NewLogger(os.Stderr)

	orders := consume.Route{
		Route: topology.Route{Name: "shop-orders", Bindings: []string{"shop.orders.#"}},
		Handler: consume.HandlerFunc(func(ctx context.Context, msg *contract.Message) error {
			// Delivery is at least once: make the work idempotent by msg.ID.
			if len(msg.Body) == 0 {
				return consume.Permanent(errUnknownOrder) // straight to the parking lot
			}
			logger.InfoContext(ctx, "order event handled", "message_id", msg.ID, "event_type", msg.EventType)
			return nil
		}),
	}

	svc, err := service.New(cfg, []consume.Route{orders}, logger)
	if err != nil {
		logger.Error("processor not started", "error", err)
		os.Exit(1)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := svc.Run(ctx); err != nil {
		logger.Error("processor stopped", "error", err)
		os.Exit(1)
	}
}
