package dlq

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/topology"
)

// commandRun is one run of a command on an open connection, with the
// streams it prints to.
type commandRun struct {
	names  topology.Names
	conn   *amqp.Connection
	opts   options
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
}

// list runs the list command and returns its exit status.
func (c *commandRun) list(ctx context.Context) int {
	res, err := list(ctx, c.conn, c.names, c.opts.queue, c.opts.filter, c.opts.limit)
	if err != nil {
		c.fail("list", err, "every message is still in "+res.queue)
		return exitFailed
	}

	if c.opts.json {
		err = writeJSON(c.stdout, res.entries)
	} else {
		err = writeTable(c.stdout, c.opts.queue, res.entries)
	}
	if err != nil {
		fmt.Fprintf(c.stderr, "processor dlq list: write output: %v\n", err)
		return exitFailed
	}
	fmt.Fprintf(c.stderr, "%d of %d messages read from %s matched (%d ready at start)\n", len(res.entries), res.read, res.queue, res.ready)
	if c.opts.limit > 0 && len(res.entries) == c.opts.limit && res.read < res.ready {
		fmt.Fprintf(c.stderr, "stopped at -limit %d; pass a higher -limit, or -limit 0, to see more\n", c.opts.limit)
	}
	return exitOK
}

// replay runs the replay command and returns its exit status: 1 also when
// a matching message could not be replayed and stays in the queue.
func (c *commandRun) replay(ctx context.Context) int {
	opts := replayOptions{limit: c.opts.limit, dryRun: c.opts.dryRun}
	var progress *progressLine
	if !c.opts.dryRun && isTerminal(c.stderr) {
		progress = &progressLine{w: c.stderr}
		opts.progress = progress.update
	}

	res, err := replay(ctx, c.conn, c.names, c.opts.queue, c.opts.filter, opts)
	progress.finish()
	for _, p := range res.skipped {
		fmt.Fprintf(c.stderr, "warning: skipped message %q, which stays in %s: %v\n", p.id, res.queue, p.err)
	}
	for _, p := range res.failed {
		fmt.Fprintf(c.stderr, "error: message %q stays in %s: %v\n", p.id, res.queue, p.err)
	}
	if err != nil {
		c.fail("replay", err, fmt.Sprintf("%d messages were replayed; every other message is still in %s", res.replayed, res.queue))
		return exitFailed
	}

	if c.opts.dryRun {
		if err := writePlan(c.stdout, res.planned); err != nil {
			fmt.Fprintf(c.stderr, "processor dlq replay: write output: %v\n", err)
			return exitFailed
		}
		fmt.Fprintf(c.stderr, "dry run: would replay %d of %d matching messages (%d read from %s, %d ready at start); nothing was changed\n",
			len(res.planned), res.matched, res.read, res.queue, res.ready)
		return exitOK
	}
	fmt.Fprintf(c.stderr, "replayed %d of %d matching messages (%d read from %s, %d ready at start); %d skipped, %d failed\n",
		res.replayed, res.matched, res.read, res.queue, res.ready, len(res.skipped), len(res.failed))
	if len(res.skipped) > 0 || len(res.failed) > 0 {
		return exitFailed
	}
	return exitOK
}

// purge runs the purge command and returns its exit status.
func (c *commandRun) purge(ctx context.Context) int {
	queue := c.opts.queue.name(c.names)
	var confirm confirmFunc
	if !c.opts.yes {
		confirm = c.askDelete(queue)
	}

	res, err := purge(ctx, c.conn, c.names, c.opts.queue, c.opts.filter, confirm)
	if err != nil {
		c.fail("purge", err, fmt.Sprintf("%d messages were deleted; every other message is still in %s", res.deleted, queue))
		return exitFailed
	}
	fmt.Fprintf(c.stderr, "deleted %d of %d matching messages (%d read from %s, %d ready at start)\n",
		res.deleted, res.matched, res.read, queue, res.ready)
	return exitOK
}

// askDelete returns a confirmFunc that prompts on stderr and reads the
// reply from stdin. Only "y" or "yes" confirm the deletion.
func (c *commandRun) askDelete(queue string) confirmFunc {
	return func(matched int) (bool, error) {
		fmt.Fprintf(c.stderr, "Delete %d message(s) from %s? [y/N] ", matched, queue)
		line, err := bufio.NewReader(c.stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return false, fmt.Errorf("read the reply from stdin: %w", err)
		}
		answer := strings.ToLower(strings.TrimSpace(line))
		return answer == "y" || answer == "yes", nil
	}
}

// fail prints err of command and what became of the messages.
func (c *commandRun) fail(command string, err error, state string) {
	if errors.Is(err, context.Canceled) {
		fmt.Fprintf(c.stderr, "processor dlq %s: interrupted; %s\n", command, state)
		return
	}
	fmt.Fprintf(c.stderr, "processor dlq %s: %v; %s\n", command, err, state)
}
