package service

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are the ingest service's Prometheus metrics, on a registry of its
// own so that several services can run in one process (as tests do).
type metrics struct {
	registry *prometheus.Registry
	requests *prometheus.CounterVec
	publish  *prometheus.HistogramVec
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
	}
	m.registry.MustRegister(m.requests, m.publish,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}
