package service

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/contract"
)

// Metric names that /metrics serves besides the Go runtime and process
// collectors.
const (
	MetricDeliveries      = "hookbus_processor_deliveries_total"
	MetricHandlerDuration = "hookbus_processor_handler_duration_seconds"
	MetricReady           = "hookbus_processor_ready"
)

// metrics holds the collectors of one Service, registered on a registry of
// its own so that two services in one process do not collide.
type metrics struct {
	registry        *prometheus.Registry
	deliveries      *prometheus.CounterVec
	handlerDuration *prometheus.HistogramVec
}

func newMetrics(routes []consume.Route, ready func() bool) *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		deliveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: MetricDeliveries,
			Help: "Deliveries settled, by route and outcome: acked (handler succeeded), retried (handler failed, the message waits in a delay queue), parked (permanent failure, attempts used up or a contract violation) or requeued (shutdown cut the handler short).",
		}, []string{"route", "outcome"}),
		handlerDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    MetricHandlerDuration,
			Help:    "Duration of handler calls in seconds, by route, including calls that failed, panicked or timed out.",
			Buckets: []float64{0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300},
		}, []string{"route"}),
	}
	readyGauge := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: MetricReady,
		Help: "1 while the processor is connected to the broker and consuming every route, else 0.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	})

	m.registry.MustRegister(
		m.deliveries,
		m.handlerDuration,
		readyGauge,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	// Create every series up front, so that rates start from zero instead
	// of appearing with the first delivery.
	for _, r := range routes {
		for _, outcome := range []consume.Outcome{consume.OutcomeAcked, consume.OutcomeRetried, consume.OutcomeParked, consume.OutcomeRequeued} {
			m.deliveries.WithLabelValues(r.Name, string(outcome))
		}
		m.handlerDuration.WithLabelValues(r.Name)
	}
	return m
}

// observe counts one settled delivery. The consumer calls it as
// consume.Options.Observe.
func (m *metrics) observe(route string, outcome consume.Outcome, _ time.Duration) {
	m.deliveries.WithLabelValues(route, string(outcome)).Inc()
}

// instrument returns routes whose handlers record their duration. The
// consumer reports a zero duration for messages that never reach a handler,
// so the histogram is fed here, around the handler call itself.
func (m *metrics) instrument(routes []consume.Route) []consume.Route {
	out := make([]consume.Route, len(routes))
	for i, r := range routes {
		out[i] = r
		if r.Handler == nil {
			continue // consume.New rejects the route
		}
		out[i].Handler = timedHandler{
			next:     r.Handler,
			duration: m.handlerDuration.WithLabelValues(r.Name),
		}
	}
	return out
}

// timedHandler observes the duration of every call of next, also when next
// panics.
type timedHandler struct {
	next     consume.Handler
	duration prometheus.Observer
}

func (h timedHandler) Handle(ctx context.Context, msg *contract.Message) error {
	start := time.Now()
	defer func() { h.duration.Observe(time.Since(start).Seconds()) }()
	return h.next.Handle(ctx, msg)
}
