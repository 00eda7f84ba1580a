package dlq

import (
	"context"
	"errors"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/pkg/topology"
)

// listResult is the outcome of list.
type listResult struct {
	queue   string
	ready   int // messages ready in the queue at the start
	read    int
	entries []entry // the matching messages, in queue order
}

// list returns the matching messages of the queue of kind, at most limit of
// them (0 for no limit), and acks none: every message returns to the queue
// when list closes its channel.
func list(ctx context.Context, conn *amqp.Connection, names topology.Names, kind queueKind, f filter, limit int) (listResult, error) {
	res := listResult{queue: kind.name(names)}
	rd, err := openReader(conn, res.queue)
	if err != nil {
		return res, err
	}
	res.ready = rd.ready

	now := time.Now()
	for limit == 0 || len(res.entries) < limit {
		d, err := rd.next(ctx)
		if err != nil {
			return res, errors.Join(err, rd.close())
		}
		if d == nil {
			break
		}
		if e := newEntry(d, kind, names, now); f.match(e) {
			res.entries = append(res.entries, e)
		}
	}
	res.read = rd.read
	return res, rd.close()
}
