package consume

import (
	"errors"
	"fmt"

	"github.com/hookbus/hookbus/pkg/topology"
)

// ErrPermanent marks a handler error that retrying cannot fix, such as a
// payload the handler can never accept. errors.Is(err, ErrPermanent)
// reports it; Permanent wraps an error so.
var ErrPermanent = errors.New("consume: permanent failure")

// Permanent returns an error that wraps err and ErrPermanent. A handler
// returns it to send the message to the parking lot at once instead of
// retrying it. Permanent(nil) returns nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }

func (e *permanentError) Unwrap() []error { return []error{e.err, ErrPermanent} }

// RetryPolicy sets how often and when a message whose handler failed with a
// transient error is tried again. Every error is transient unless it wraps
// ErrPermanent, including a handler timeout.
type RetryPolicy struct {
	topology.RetrySchedule
	// MaxAttempts is the number of handler calls after which a message
	// that keeps failing is parked, counting the first. Zero means one
	// more than the number of delays.
	MaxAttempts int
}

// DefaultRetryPolicy retries after topology.DefaultRetrySchedule's delays,
// six attempts in all over about seven hours.
var DefaultRetryPolicy = RetryPolicy{RetrySchedule: topology.DefaultRetrySchedule}

// Validate returns an error when the schedule is invalid or MaxAttempts is
// negative.
func (p RetryPolicy) Validate() error {
	if p.MaxAttempts < 0 {
		return fmt.Errorf("consume: max attempts %d is negative", p.MaxAttempts)
	}
	return p.RetrySchedule.Validate()
}

// maxAttempts returns MaxAttempts, or its default.
func (p RetryPolicy) maxAttempts() int {
	if p.MaxAttempts > 0 {
		return p.MaxAttempts
	}
	return len(p.Delays) + 1
}

func (c *Consumer) retryPolicy(route Route) RetryPolicy {
	if route.Retry != nil {
		return *route.Retry
	}
	return c.opts.Retry
}
