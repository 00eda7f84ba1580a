// Command processor consumes hookbus webhook events from RabbitMQ and runs
// the built-in default route on them. Run it with -h for its configuration.
// "processor dlq" lists, replays and deletes parked and unrouted messages;
// run "processor dlq -h" for its commands.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/processor/dlq"
	"github.com/hookbus/hookbus/processor/handlers"
	"github.com/hookbus/hookbus/processor/service"
)

// Exit statuses.
const (
	exitOK     = 0
	exitFailed = 1 // the service stopped with an error
	exitUsage  = 2 // invalid arguments or configuration
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is the whole command with its arguments and output streams, so that
// tests can call it. It returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "-h", "-help", "--help", "help":
			if err := service.Usage(stdout); err != nil {
				fmt.Fprintf(stderr, "processor: write help: %v\n", err)
				return exitFailed
			}
			fmt.Fprintln(stdout, "\nTo inspect, replay or delete parked and unrouted messages, run processor dlq -h.")
			return exitOK
		case "dlq":
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			// A second signal ends the process at once.
			context.AfterFunc(ctx, stop)
			return dlq.Run(ctx, args[1:], os.Stdin, stdout, stderr)
		default:
			fmt.Fprintf(stderr, "processor: unknown argument %q (the processor takes no arguments except the dlq command, and reads its configuration from environment variables, which processor -h lists)\n", args[0])
			return exitUsage
		}
	}

	var cfg service.Config
	if err := config.Problems(config.Load(&cfg), cfg.Validate()); err != nil {
		fmt.Fprintf(stderr, "processor: invalid configuration:\n%v\n", err)
		return exitUsage
	}
	logger := cfg.NewLogger(stderr)

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// After the first signal, restore the default handling, so that a
	// second one ends the process at once instead of waiting for handlers.
	context.AfterFunc(ctx, stop)

	svc, err := service.New(cfg, []consume.Route{handlers.DefaultRoute(logger)}, logger)
	if err != nil {
		logger.Error("processor not started", "error", err)
		return exitFailed
	}
	if err := svc.Run(ctx); err != nil {
		// Run has logged the error. This plain line is for a person at the
		// terminal, where the JSON log is hard to read.
		fmt.Fprintf(stderr, "processor: %v\n", err)
		return exitFailed
	}
	return exitOK
}
