package service

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/hookbus/hookbus/ingest/spool"
)

// metrics are the ingest service's Prometheus metrics, on a registry of its
// own so that several services can run in one process (as tests do).
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	publish  *prometheus.HistogramVec
	// spooled and drained count webhooks written to the spool and
	// published from it. Only registerSpool registers them.
	spooled prometheus.Counter
	drained prometheus.Counter
}

func newMetrics() *metrics {
	m := &metrics{
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "hookbus_ingest_requests_total",
			Help: "Webhook requests by HTTP status code.",
		}, []string{"code"}),
		publish: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "hookbus_ingest_publish_seconds",
			Help:    "Time from publishing a webhook to the broker's confirm, by result (confirmed or failed).",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}, []string{"result"}),
		spooled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookbus_ingest_spooled_total",
			Help: "Webhooks written to the spool because the broker did not confirm them.",
		}),
		drained: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "hookbus_ingest_spool_drained_total",
			Help: "Spooled webhooks published after the broker confirmed them, and removed from the spool.",
		}),
	}
	m.registry.MustRegister(m.requests, m.publish,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// registerSpool registers the spool counters and the gauges of sp's depth.
// Without a spool, none of them is exported.
func (m *metrics) registerSpool(sp *spool.Spool) {
	m.registry.MustRegister(m.spooled, m.drained, newSpoolCollector(sp))
}

// spoolCollector exports a spool's depth, read once per scrape.
type spoolCollector struct {
	spool     *spool.Spool
	messages  *prometheus.Desc
	bytes     *prometheus.Desc
	oldestAge *prometheus.Desc
}

func newSpoolCollector(sp *spool.Spool) *spoolCollector {
	return &spoolCollector{
		spool:     sp,
		messages:  prometheus.NewDesc("hookbus_ingest_spool_messages", "Webhooks in the spool, waiting for the broker.", nil, nil),
		bytes:     prometheus.NewDesc("hookbus_ingest_spool_bytes", "Total size of the spooled webhooks in bytes, counted against HOOKBUS_SPOOL_MAX_BYTES.", nil, nil),
		oldestAge: prometheus.NewDesc("hookbus_ingest_spool_oldest_age_seconds", "Time the oldest spooled webhook has waited; 0 when the spool is empty.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *spoolCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.messages
	ch <- c.bytes
	ch <- c.oldestAge
}

// Collect implements prometheus.Collector. When the spool cannot be read,
// it reports the error to the scrape instead of values.
func (c *spoolCollector) Collect(ch chan<- prometheus.Metric) {
	stats, err := c.spool.Stats()
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.messages, err)
		return
	}
	ch <- prometheus.MustNewConstMetric(c.messages, prometheus.GaugeValue, float64(stats.Messages))
	ch <- prometheus.MustNewConstMetric(c.bytes, prometheus.GaugeValue, float64(stats.Bytes))
	ch <- prometheus.MustNewConstMetric(c.oldestAge, prometheus.GaugeValue, stats.OldestAge(time.Now()).Seconds())
}
