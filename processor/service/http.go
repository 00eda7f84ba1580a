package service

import (
	"encoding/json"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// ReadyStatus is the JSON body of /readyz.
type ReadyStatus struct {
	Ready bool `json:"ready"`
	// NotReady names the parts that are not ready, such as "broker
	// connection" or "route consumers". It is empty when Ready is true.
	NotReady []string `json:"not_ready,omitempty"`
}

// newHTTPServer returns the server of /healthz, /readyz and /metrics. None
// of the handlers takes long, so short timeouts protect the port from slow
// clients.
func (s *Service) newHTTPServer() *http.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.serveHealth)
	mux.HandleFunc("GET /readyz", s.serveReady)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{
		ErrorLog: slogPrinter{s},
		Timeout:  10 * time.Second,
	}))
	return &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      15 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    16 << 10,
	}
}

// serveHealth responds with status 200 for as long as the process serves
// HTTP.
func (s *Service) serveHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	_, _ = w.Write([]byte("ok\n"))
}

// serveReady responds with status 200 when Ready is true and 503 otherwise,
// with a ReadyStatus body.
func (s *Service) serveReady(w http.ResponseWriter, _ *http.Request) {
	status := ReadyStatus{NotReady: s.notReady()}
	status.Ready = len(status.NotReady) == 0

	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if !status.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(status)
}

// slogPrinter passes the errors of the metrics handler to the service's
// logger.
type slogPrinter struct{ s *Service }

func (p slogPrinter) Println(v ...any) {
	p.s.log.Error("metrics collection failed", "error", fmt.Sprint(v...))
}
