// Package service is the ingest HTTP service: it receives webhooks on
// POST /webhooks/:source, publishes each as one persistent message with
// publisher confirms, and responds 202 only after the broker confirmed it.
// With HOOKBUS_SPOOL_DIR set, it also responds 202 for a message that the
// broker did not confirm once the message is on local disk in the spool.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/topology"
)

// ConnectionName is the name of ingest's AMQP connection in the management UI.
const ConnectionName = "hookbus-ingest"

// maxHeaderBytes caps the request headers the HTTP server reads. The headers
// travel in the AMQP message, which must stay below the broker's frame size.
const maxHeaderBytes = 32 << 10

func init() {
	gin.SetMode(gin.ReleaseMode)
}

// Service is a running ingest: HTTP server, broker client, publisher and,
// when configured, the spool.
type Service struct {
	cfg       Config
	log       *slog.Logger
	names     topology.Names
	sources   *Sources
	listener  net.Listener
	server    *http.Server
	client    *rabbit.Client
	publisher *rabbit.Publisher
	metrics   *metrics
	// spooler is nil when the spool is off.
	spooler *spooler
}

// New validates cfg, declares nothing yet, listens on cfg.Addr, so that Addr
// is known before Run (use port 0 in tests), and opens the spool when
// cfg.SpoolDir is set. It fails when another process has the spool file
// open. The caller must call Run, which closes the listener and the spool
// when it returns.
func New(cfg Config, logger *slog.Logger) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	names := cfg.Names()
	sources, err := LoadSources(cfg, cfg.lookupEnv())
	if err != nil {
		return nil, err
	}

	tlsConfig, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}

	listener, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", cfg.Addr, err)
	}
	client := rabbit.NewClient(rabbit.Config{
		URL:    cfg.AMQPURL,
		Name:   ConnectionName,
		TLS:    tlsConfig,
		Setup:  topology.Setup(names),
		Logger: logger,
	})
	s := &Service{
		cfg:       cfg,
		log:       logger,
		names:     names,
		sources:   sources,
		listener:  listener,
		client:    client,
		publisher: rabbit.NewPublisher(client, cfg.PublishChannels, logger),
		metrics:   newMetrics(),
	}
	if cfg.SpoolDir != "" {
		if s.spooler, err = openSpooler(cfg, s.publisher, s.metrics, logger); err != nil {
			_ = listener.Close()
			return nil, err
		}
	}
	s.server = &http.Server{
		Handler:           s.routes(),
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       cfg.ReadTimeout,
		// A request may spend ReadTimeout reading and PublishTimeout
		// waiting for the confirm; the response must still get out.
		WriteTimeout:   cfg.ReadTimeout + cfg.PublishTimeout + 5*time.Second,
		IdleTimeout:    120 * time.Second,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// Addr returns the address the HTTP server listens on.
func (s *Service) Addr() string {
	return s.listener.Addr().String()
}

// Ready reports whether ingest can accept webhooks: connected to the broker
// with at least one open confirm-mode channel and not blocked, or with the
// spool on and not full.
func (s *Service) Ready() bool {
	return s.brokerReady() || s.spooler.status().accepts()
}

// brokerReady reports whether ingest can publish to the broker: connected,
// with at least one open confirm-mode channel, and not blocked.
func (s *Service) brokerReady() bool {
	return s.client.Connected() && s.publisher.Ready()
}

// Run serves HTTP, keeps the broker connection and drains the spool until
// ctx is done. Then it stops accepting connections, lets in-flight requests
// finish their publish (for at most ShutdownGrace), stops the drainer after
// its current batch (at most PublishTimeout), closes the broker connection,
// and closes the spool file last.
// It returns nil after a clean shutdown, and an error when the server fails
// or the broker rejects the topology permanently (for example an existing
// queue with other arguments).
func (s *Service) Run(ctx context.Context) error {
	brokerCtx, stopBroker := context.WithCancel(context.Background())
	defer stopBroker()

	var wg sync.WaitGroup
	clientErr := make(chan error, 1)
	wg.Add(2)
	go func() {
		defer wg.Done()
		clientErr <- s.client.Run(brokerCtx)
	}()
	go func() {
		defer wg.Done()
		s.publisher.Run(brokerCtx)
	}()

	drainCtx, stopDrain := context.WithCancel(context.Background())
	defer stopDrain()
	var drainer sync.WaitGroup
	if s.spooler != nil {
		drainer.Add(1)
		go func() {
			defer drainer.Done()
			s.spooler.run(drainCtx)
		}()
	}

	serveErr := make(chan error, 1)
	go func() {
		serveErr <- s.server.Serve(s.listener)
	}()
	s.log.Info("ingest started", "addr", s.Addr(), "namespace", s.names.Namespace(), "exchange", s.names.Exchange(), "spool_dir", s.cfg.SpoolDir)
	s.logSources()

	var runErr error
	select {
	case <-ctx.Done():
	case err := <-serveErr:
		runErr = fmt.Errorf("http server: %w", err)
		serveErr <- nil
	case err := <-clientErr:
		if err != nil {
			runErr = fmt.Errorf("broker: %w", err)
			s.log.Error("broker rejected the connection or the topology permanently, stopping", "error", err)
		}
		clientErr <- nil
	}

	s.log.Info("ingest stopping", "grace", s.cfg.ShutdownGrace)
	shutdownCtx, cancel := context.WithTimeout(context.Background(), s.cfg.ShutdownGrace)
	defer cancel()
	if err := s.server.Shutdown(shutdownCtx); err != nil {
		s.log.Warn("http shutdown incomplete, closing remaining connections", "error", err)
		_ = s.server.Close()
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		runErr = errors.Join(runErr, fmt.Errorf("http server: %w", err))
	}

	// The requests have finished, unless the grace period ran out. A
	// handler that writes to the spool after it is closed gets an error
	// and responds 503. The drainer finishes its batch while the broker
	// connection is still open.
	stopDrain()
	drainer.Wait()
	stopBroker()
	wg.Wait()
	if s.spooler != nil {
		if err := s.spooler.close(); err != nil {
			runErr = errors.Join(runErr, err)
		}
	}
	s.log.Info("ingest stopped")
	return runErr
}

// logSources logs the configured sources, and warns about those whose
// webhooks anyone could forge.
func (s *Service) logSources() {
	if s.sources.Open() {
		s.log.Warn("no sources configured, accepting every source name without signature verification; set HOOKBUS_SOURCES to verify senders")
		return
	}
	s.log.Info("sources configured", "sources", s.sources.Names())
	for _, name := range s.sources.Unverified() {
		s.log.Warn("source accepts webhooks without signature verification", "source", name)
	}
}

func (s *Service) routes() http.Handler {
	engine := gin.New()
	engine.RedirectTrailingSlash = false
	engine.RedirectFixedPath = false
	engine.HandleMethodNotAllowed = true
	engine.Use(s.recoverPanic)
	engine.NoRoute(func(c *gin.Context) {
		writeError(c, http.StatusNotFound, "no such endpoint; webhooks go to POST /webhooks/<source>")
	})
	engine.NoMethod(func(c *gin.Context) {
		writeError(c, http.StatusMethodNotAllowed, "method not allowed")
	})

	engine.POST("/webhooks/:source", s.receive)
	engine.GET("/healthz", func(c *gin.Context) {
		c.JSON(http.StatusOK, gin.H{"status": "ok"})
	})
	engine.GET("/readyz", s.readyz)
	metricsHandler := promhttp.HandlerFor(s.metrics.registry, promhttp.HandlerOpts{})
	engine.GET("/metrics", gin.WrapH(metricsHandler))
	return engine
}

func (s *Service) readyz(c *gin.Context) {
	spool := s.spooler.status()
	status := gin.H{
		"broker_connected": s.client.Connected(),
		"broker_blocked":   s.client.Blocked(),
		"publish_channel":  s.publisher.Ready(),
		"spool":            spool,
	}
	if !s.brokerReady() && !spool.accepts() {
		status["status"] = "not ready"
		c.JSON(http.StatusServiceUnavailable, status)
		return
	}
	status["status"] = "ready"
	c.JSON(http.StatusOK, status)
}

// recoverPanic responds 500 to a panic in a handler and logs it, so that no
// input crashes the process.
func (s *Service) recoverPanic(c *gin.Context) {
	defer func() {
		if p := recover(); p != nil {
			if p == http.ErrAbortHandler {
				panic(p)
			}
			s.log.Error("panic in http handler", "path", c.Request.URL.Path, "panic", fmt.Sprint(p))
			writeError(c, http.StatusInternalServerError, "internal error")
		}
	}()
	c.Next()
}

func writeError(c *gin.Context, code int, message string) {
	c.AbortWithStatusJSON(code, gin.H{"error": message})
}
