package dlq

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"

	"golang.org/x/term"

	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/topology"
)

// errHelp is returned by parseOptions when the arguments ask for help.
var errHelp = errors.New("dlq: help requested")

// queueKind selects the queue a command reads: the parking lot or the
// unrouted queue.
type queueKind string

const (
	queueParked   queueKind = "parked"
	queueUnrouted queueKind = "unrouted"
)

// name returns the queue's name in the namespace.
func (k queueKind) name(names topology.Names) string {
	if k == queueUnrouted {
		return names.UnroutedQueue()
	}
	return names.ParkedQueue()
}

func (k *queueKind) String() string { return string(*k) }

func (k *queueKind) Set(value string) error {
	switch queueKind(value) {
	case queueParked, queueUnrouted:
		*k = queueKind(value)
		return nil
	}
	return fmt.Errorf("invalid queue %q (want parked or unrouted)", value)
}

// idList is the value of the repeatable -id flag.
type idList map[string]bool

func (l idList) String() string { return strings.Join(slices.Sorted(maps.Keys(l)), ",") }

func (l idList) Set(value string) error {
	added := 0
	for _, id := range strings.Split(value, ",") {
		if id = strings.TrimSpace(id); id != "" {
			l[id] = true
			added++
		}
	}
	// An empty value must not turn into "no filter": a script that passes
	// an unset variable would otherwise purge every message.
	if added == 0 {
		return fmt.Errorf("empty message id in %q", value)
	}
	return nil
}

// options are the parsed flags of one command.
type options struct {
	queue  queueKind
	filter filter
	limit  int  // list and replay: maximum number of matching messages, 0 for no limit
	json   bool // list: one JSON object per line instead of a table
	dryRun bool // replay: print what would be replayed, change nothing
	yes    bool // purge: delete without asking
}

// Default -limit of each command; purge takes no -limit.
const (
	defaultListLimit   = 100
	defaultReplayLimit = 0
)

// newFlagSet returns the flag set of command, which writes nothing itself:
// Run prints errors and help.
func newFlagSet(command string, opts *options) *flag.FlagSet {
	fs := flag.NewFlagSet("processor dlq "+command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}

	opts.queue = queueParked
	opts.filter.ids = idList{}
	fs.Var(&opts.queue, "queue", "`queue` to read: parked (<namespace>.parked) or unrouted (<namespace>.unrouted)")
	fs.StringVar(&opts.filter.source, "source", "", "select messages from the source with this `name` (the hookbus-source header)")
	fs.StringVar(&opts.filter.eventType, "type", "", "select messages of this event `type` as the provider sent it (the type property, for example push or orders/create)")
	fs.Var(opts.filter.ids, "id", "select messages with this message `id`; repeat the flag or separate ids with commas")
	fs.StringVar(&opts.filter.route, "route", "", "select parked messages of the route with this `name` (the hookbus-route header, or the route queue that dead-lettered the message)")
	fs.DurationVar(&opts.filter.olderThan, "older-than", 0, "select messages parked (or, in the unrouted queue, received) longer ago than this duration, for example 30m or 24h")
	fs.DurationVar(&opts.filter.newerThan, "newer-than", 0, "select messages parked (or, in the unrouted queue, received) less long ago than this duration")

	switch command {
	case "list":
		fs.IntVar(&opts.limit, "limit", defaultListLimit, "maximum number of matching messages to print; 0 for no limit")
		fs.BoolVar(&opts.json, "json", false, "print one JSON object per line instead of a table")
	case "replay":
		fs.IntVar(&opts.limit, "limit", defaultReplayLimit, "maximum number of matching messages to replay; 0 for no limit")
		fs.BoolVar(&opts.dryRun, "dry-run", false, "print the messages that would be replayed and where to, and change nothing")
	case "purge":
		fs.BoolVar(&opts.yes, "yes", false, "delete without asking for confirmation (required when stdin is not a terminal)")
	}
	return fs
}

// parseOptions parses the flags of command and checks their values. It
// returns errHelp for -h.
func parseOptions(command string, args []string) (options, error) {
	var opts options
	fs := newFlagSet(command, &opts)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return opts, errHelp
		}
		return opts, err
	}
	if fs.NArg() > 0 {
		return opts, fmt.Errorf("unexpected argument %q (every option is a flag, for example -id %s)", fs.Arg(0), fs.Arg(0))
	}
	// A filter flag given with an empty value would match every message.
	var empty []string
	fs.Visit(func(f *flag.Flag) {
		if (f.Name == "source" || f.Name == "type" || f.Name == "route") && f.Value.String() == "" {
			empty = append(empty, "-"+f.Name)
		}
	})
	if len(empty) > 0 {
		return opts, fmt.Errorf("empty value for %s (an empty filter would select every message; leave the flag out instead)", strings.Join(empty, ", "))
	}
	return opts, opts.validate()
}

// validate returns the first invalid flag value of opts.
func (o options) validate() error {
	f := o.filter
	switch {
	case o.limit < 0:
		return fmt.Errorf("invalid -limit %d (want 0 for no limit or a positive number)", o.limit)
	case f.source != "" && !contract.ValidSource(f.source):
		return fmt.Errorf("invalid -source %q (a source is 1 to %d lowercase ASCII letters, digits, '-' or '_')", f.source, contract.MaxSourceLength)
	case f.olderThan < 0:
		return fmt.Errorf("invalid -older-than %s (want a positive duration)", f.olderThan)
	case f.newerThan < 0:
		return fmt.Errorf("invalid -newer-than %s (want a positive duration)", f.newerThan)
	case f.route != "" && o.queue == queueUnrouted:
		return errors.New("-route selects parked messages, but unrouted messages have no route (drop -route or use -queue parked)")
	}
	if f.route != "" {
		if err := topology.ValidateRoute(f.route); err != nil {
			return fmt.Errorf("invalid -route: %w", err)
		}
	}
	return nil
}

// isTerminal reports whether stream is a file that is a terminal.
func isTerminal(stream any) bool {
	f, ok := stream.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

const usageText = `Usage: processor dlq <command> [flags]

Inspects, replays and deletes the messages that wait in the parking lot
(<namespace>.parked: messages whose handler failed) and in the unrouted queue
(<namespace>.unrouted: events that matched no route).

Commands:
  list     print messages without removing them
  replay   publish a copy of each message to its route (parked) or to the
           events exchange (unrouted), then remove the original
  purge    delete messages

Filters, combined with AND: -source, -type, -id, -route, -older-than and
-newer-than. Run 'processor dlq <command> -h' for the flags of a command.

Exit status: 0 on success, 1 on a broker or runtime error, 2 on invalid
arguments or configuration.

The broker and the namespace come from these environment variables:

`

// writeUsage writes the help of the dlq command to w.
func writeUsage(w io.Writer) error {
	if _, err := io.WriteString(w, usageText); err != nil {
		return err
	}
	return config.Usage(w, &brokerConfig{})
}

// commandAbout is the description of each command in its -h output.
var commandAbout = map[string]string{
	"list": `Usage: processor dlq list [-queue parked|unrouted] [filters] [-limit N] [-json]

Prints the matching messages of the queue as a table or, with -json, as one
JSON object per line, and removes nothing. It reads at most as many messages
as the queue had ready at the start, and returns all of them to the queue.
A line on stderr says how many of the messages read matched.
`,
	"replay": `Usage: processor dlq replay [-queue parked|unrouted] [filters] [-limit N] [-dry-run]

Publishes a copy of each matching message and removes the original only after
the broker confirmed the copy, so an interrupted replay loses no message.
A parked message goes back to its route's queue, with the failure headers
removed and hookbus-replays incremented, so its handler gets every attempt
again. An unrouted message is published again to the events exchange with its
routing key; if it still matches no route it returns to the unrouted queue.
Messages that do not match stay where they are.
`,
	"purge": `Usage: processor dlq purge [-queue parked|unrouted] [filters] [-yes]

Deletes the matching messages. Without -yes it counts them first and asks for
confirmation on the terminal, then deletes exactly the messages it counted.
Without -yes and without a terminal on stdin it deletes nothing and exits
with status 2.
`,
}

// writeCommandUsage writes the help of one command and its flags to w.
func writeCommandUsage(w io.Writer, command string) {
	fmt.Fprintln(w, commandAbout[command])
	fmt.Fprintln(w, "Flags:")
	var opts options
	fs := newFlagSet(command, &opts)
	fs.SetOutput(w)
	fs.PrintDefaults()
}
