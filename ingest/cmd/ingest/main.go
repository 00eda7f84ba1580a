// Command ingest receives webhooks over HTTP and publishes each to RabbitMQ,
// answering 202 only after the broker confirmed it. Run `ingest -h` for its
// configuration.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/hookbus/hookbus/ingest/send"
	"github.com/hookbus/hookbus/ingest/service"
	"github.com/hookbus/hookbus/ingest/verify"
	"github.com/hookbus/hookbus/pkg/config"
)

const about = `ingest receives webhooks on POST /webhooks/<source> and publishes each one,
byte for byte, as a persistent message to RabbitMQ. It answers 202 Accepted only
after the broker confirmed the message, and 503 with Retry-After otherwise.
GET /healthz, /readyz and /metrics serve health and Prometheus metrics.

Configuration comes from these environment variables:

`

const sendHelp = `ingest send -source NAME [-kind KIND] [-secret-env VAR] FILE signs FILE as the
sender of KIND would and POSTs it to an ingest; run ingest send -h for its flags.
`

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	var cfg service.Config
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			fmt.Print(about)
			if err := config.Usage(os.Stdout, &cfg); err != nil {
				fmt.Fprintln(os.Stderr, "ingest:", err)
				return 1
			}
			fmt.Printf("\n%s%s.\n\n%s", service.SourceHelp, strings.Join(verify.KindNames(), ", "), sendHelp)
			return 0
		case "send":
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return send.Run(ctx, args[1:], os.Stdout, os.Stderr)
		default:
			fmt.Fprintf(os.Stderr, "ingest: unknown argument %q; run ingest -h for help\n", args[0])
			return 2
		}
	}

	if err := config.Problems(config.Load(&cfg), cfg.Validate()); err != nil {
		fmt.Fprintf(os.Stderr, "ingest: invalid configuration:\n%v\n", err)
		return 2
	}
	logger := cfg.NewLogger(os.Stderr)

	svc, err := service.New(cfg, logger)
	if err != nil {
		logger.Error("ingest start failed", "error", err)
		return 1
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := svc.Run(ctx); err != nil {
		logger.Error("ingest stopped with an error", "error", err)
		return 1
	}
	return 0
}
