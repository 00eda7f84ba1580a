// Package dlq implements the processor dlq command, which lists, replays and
// deletes the messages in a namespace's parking lot (<ns>.parked) and unrouted
// queue (<ns>.unrouted).
//
// Every command reads a queue with basic.get without auto-ack, at most as many
// messages as the queue had ready when the command started. It acks only the
// messages it removes. Replay acks a message after the broker confirmed its
// copy, and purge acks the messages it deletes. Closing the channel at the
// end returns every other message to the queue.
package dlq

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/rabbit"
)

// Exit statuses of Run.
const (
	exitOK     = 0
	exitFailed = 1 // the broker failed or a message could not be handled
	exitUsage  = 2 // invalid arguments or configuration
)

// dialTimeout bounds the TCP connect and AMQP handshake with the broker.
const dialTimeout = 10 * time.Second

// brokerConfig is the configuration of the dlq command: the broker URL and
// namespace, from the same variables the processor reads.
type brokerConfig struct {
	config.Broker
}

// Run runs the dlq command with args, the arguments after "dlq", and returns
// its exit status: 0 on success, 1 on a broker or runtime error, 2 on invalid
// arguments or configuration. It reads the purge confirmation from stdin,
// writes listings to stdout and everything else to stderr. Cancelling ctx
// stops the command between two messages; every message it has not removed
// stays in its queue.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprintln(stderr, "processor dlq: missing command (want list, replay or purge)")
		fmt.Fprintln(stderr, "Run 'processor dlq -h' for usage.")
		return exitUsage
	}
	switch args[0] {
	case "-h", "-help", "--help", "help":
		if err := writeUsage(stdout); err != nil {
			fmt.Fprintf(stderr, "processor dlq: write help: %v\n", err)
			return exitFailed
		}
		return exitOK
	case "list", "replay", "purge":
	default:
		fmt.Fprintf(stderr, "processor dlq: unknown command %q (want list, replay or purge)\n", args[0])
		fmt.Fprintln(stderr, "Run 'processor dlq -h' for usage.")
		return exitUsage
	}

	command := args[0]
	opts, err := parseOptions(command, args[1:])
	if errors.Is(err, errHelp) {
		writeCommandUsage(stdout, command)
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "processor dlq %s: %v\n", command, err)
		fmt.Fprintf(stderr, "Run 'processor dlq %s -h' for usage.\n", command)
		return exitUsage
	}
	if command == "purge" && !opts.yes && !isTerminal(stdin) {
		fmt.Fprintln(stderr, "processor dlq purge: stdin is not a terminal, so purge cannot ask for confirmation; pass -yes to delete the matching messages without asking")
		return exitUsage
	}

	var cfg brokerConfig
	if err := config.Problems(config.Load(&cfg), cfg.Validate()); err != nil {
		fmt.Fprintf(stderr, "processor dlq: invalid configuration:\n%v\n", err)
		return exitUsage
	}

	conn, err := dial(cfg.Broker)
	if err != nil {
		fmt.Fprintf(stderr, "processor dlq: %v\n", err)
		return exitFailed
	}
	defer conn.Close()

	cmd := &commandRun{
		names:  cfg.Names(),
		conn:   conn,
		opts:   opts,
		stdin:  stdin,
		stdout: stdout,
		stderr: stderr,
	}
	switch command {
	case "list":
		return cmd.list(ctx)
	case "replay":
		return cmd.replay(ctx)
	default:
		return cmd.purge(ctx)
	}
}

// dial connects to the first broker of the configured URLs that accepts
// the connection. The error lists each URL without its password and the
// variable to check.
func dial(cfg config.Broker) (*amqp.Connection, error) {
	tlsConfig, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	props := amqp.NewConnectionProperties()
	props.SetClientConnectionName("hookbus processor dlq")

	var errs []error
	for _, url := range rabbit.SplitURLs(cfg.AMQPURL) {
		amqpConfig := amqp.Config{Dial: amqp.DefaultDial(dialTimeout), Properties: props}
		if tlsConfig != nil {
			// amqp091-go writes the URL's host into an empty
			// ServerName, so each URL gets its own copy.
			amqpConfig.TLSClientConfig = tlsConfig.Clone()
		}
		conn, err := amqp.DialConfig(url, amqpConfig)
		if err == nil {
			return conn, nil
		}
		errs = append(errs, fmt.Errorf("connect to the broker at %s: %w", rabbit.RedactURL(url), err))
	}
	return nil, fmt.Errorf("%w\ncheck HOOKBUS_AMQP_URL and that RabbitMQ accepts connections there", errors.Join(errs...))
}
