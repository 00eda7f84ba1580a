// Package service runs the hookbus processor: it consumes the queues of a set
// of routes from RabbitMQ, runs each route's handler on every message, parks
// the messages that fail, and serves /healthz, /readyz and /metrics over HTTP.
//
// The processor command runs it with the built-in default route; a program
// that needs its own handlers builds a Service with its own routes.
package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/consume"
	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/topology"
)

// ConnectionName is the AMQP connection name of the processor, shown in the
// RabbitMQ management UI.
const ConnectionName = "hookbus-processor"

// parkingChannels is the number of confirm-mode channels that publish parked
// messages. Parking is the failure path, so a few channels suffice.
const parkingChannels = 2

// httpShutdownTimeout bounds how long Run waits for open HTTP requests after
// the broker side has stopped.
const httpShutdownTimeout = 5 * time.Second

// ErrAlreadyRun is returned by Run when it is called a second time.
var ErrAlreadyRun = errors.New("service: Run called more than once")

// Service is one processor: a broker connection, a consumer of every route,
// a publisher for the parking lot and an HTTP server. Create it with New and
// start it with Run.
type Service struct {
	cfg       Config
	log       *slog.Logger
	names     topology.Names
	client    *rabbit.Client
	publisher *rabbit.Publisher
	consumer  *consume.Consumer
	metrics   *metrics
	server    *http.Server

	ran     atomic.Bool
	started chan struct{} // closed once Run has opened the listener or returned

	// mu guards addr.
	mu   sync.Mutex
	addr string
}

// New returns a Service that consumes routes with cfg. It validates cfg and
// returns an error for an invalid configuration, for no routes, and for a
// route without a handler or with an invalid or duplicate name. It does not
// connect or listen: Run does. A nil logger means slog.Default().
func New(cfg Config, routes []consume.Route, logger *slog.Logger) (*Service, error) {
	if logger == nil {
		logger = slog.Default()
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("service: invalid configuration: %w", err)
	}
	// Route names become metric labels below, so check them before
	// consume.New does.
	for _, r := range routes {
		if err := topology.ValidateRoute(r.Name); err != nil {
			return nil, fmt.Errorf("service: %w", err)
		}
	}

	s := &Service{
		cfg:     cfg,
		log:     logger,
		names:   cfg.Names(),
		started: make(chan struct{}),
	}

	topologyRoutes := make([]topology.Route, len(routes))
	for i, r := range routes {
		topologyRoutes[i] = r.Route
	}
	tlsConfig, err := cfg.TLSConfig()
	if err != nil {
		return nil, err
	}
	s.client = rabbit.NewClient(rabbit.Config{
		URL:    cfg.AMQPURL,
		Name:   ConnectionName,
		TLS:    tlsConfig,
		Setup:  topology.Setup(s.names, topologyRoutes...),
		Logger: logger,
	})
	s.publisher = rabbit.NewPublisher(s.client, parkingChannels, logger)
	s.metrics = newMetrics(routes, s.Ready)

	consumer, err := consume.New(s.client, s.publisher, s.names, s.metrics.instrument(routes), consume.Options{
		Prefetch:       cfg.Prefetch,
		Concurrency:    cfg.Concurrency,
		HandlerTimeout: cfg.HandlerTimeout,
		ShutdownGrace:  cfg.ShutdownGrace,
		Retry:          cfg.RetryPolicy(),
		Logger:         logger,
		Observe:        s.metrics.observe,
	})
	if err != nil {
		return nil, fmt.Errorf("service: %w", err)
	}
	s.consumer = consumer
	s.server = s.newHTTPServer()
	return s, nil
}

// Run opens the HTTP listener on cfg.Addr, connects to the broker, declares
// the topology and consumes every route until ctx is done. Then it shuts
// down in order: the consumer stops taking deliveries, running handlers get
// up to ShutdownGrace to finish and their messages are settled, the parking
// publisher and the broker connection close, and finally the HTTP server
// closes. Run returns nil after a shutdown caused by ctx.
//
// Run returns an error when the listener cannot be opened or the HTTP server
// fails. It also returns one, without retrying, when the broker rejects the
// connection permanently (see rabbit.IsPermanent). An example is a queue that
// exists with other arguments: then the error includes the broker's reason,
// which names the queue and the argument. Run retries every other broker
// error until ctx is done. Run may be called only once.
func (s *Service) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return ErrAlreadyRun
	}
	defer s.markStarted()

	listener, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("service: listen on %s: %w", s.cfg.Addr, err)
	}
	s.mu.Lock()
	s.addr = listener.Addr().String()
	s.mu.Unlock()
	s.markStarted()
	s.log.Info("processor starting", "http_addr", s.Addr(), "namespace", s.names.Namespace(), "broker", rabbit.RedactURL(s.cfg.AMQPURL))

	// consumeCtx ends with ctx or when something fails for good. The broker
	// side has a context of its own, cancelled only after the consumer has
	// returned, so that running handlers can still ack and park messages
	// while they finish.
	consumeCtx, cancelConsume := context.WithCancel(ctx)
	defer cancelConsume()
	brokerCtx, cancelBroker := context.WithCancel(context.WithoutCancel(ctx))
	defer cancelBroker()

	var httpGroup errgroup.Group
	httpGroup.Go(func() error {
		if err := s.server.Serve(listener); !errors.Is(err, http.ErrServerClosed) {
			cancelConsume()
			return fmt.Errorf("service: serve http: %w", err)
		}
		return nil
	})

	var brokerGroup errgroup.Group
	brokerGroup.Go(func() error {
		if err := s.client.Run(brokerCtx); err != nil {
			cancelConsume()
			if topology.IsPreconditionFailed(err) {
				return fmt.Errorf("service: broker rejected the topology because an object exists with other arguments (migrate or delete it, or set another %s_NAMESPACE): %w", config.Prefix, err)
			}
			return fmt.Errorf("service: broker connection failed permanently: %w", err)
		}
		return nil
	})
	brokerGroup.Go(func() error {
		s.publisher.Run(brokerCtx)
		return nil
	})
	brokerGroup.Go(func() error {
		defer cancelBroker()
		return s.consumer.Run(consumeCtx)
	})
	brokerErr := brokerGroup.Wait()

	shutdownCtx, cancelShutdown := context.WithTimeout(context.Background(), httpShutdownTimeout)
	defer cancelShutdown()
	var shutdownErr error
	if err := s.server.Shutdown(shutdownCtx); err != nil {
		shutdownErr = fmt.Errorf("service: shut down http server: %w", err)
		_ = s.server.Close()
	}
	httpErr := httpGroup.Wait()

	err = errors.Join(brokerErr, httpErr, shutdownErr)
	if err != nil {
		s.log.Error("processor stopped", "error", err)
		return err
	}
	s.log.Info("processor stopped")
	return nil
}

// Started returns a channel that is closed once Run has opened the HTTP
// listener, or has returned without opening it.
func (s *Service) Started() <-chan struct{} {
	return s.started
}

// Addr returns the address the HTTP server listens on, such as
// "127.0.0.1:41873" for a configured "127.0.0.1:0". It is empty until
// Started is closed, and stays empty when the listener could not be opened.
func (s *Service) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Ready reports whether the service is connected to the broker, consumes
// every route and has a channel open for parking messages. The same state
// decides /readyz and the hookbus_processor_ready gauge.
func (s *Service) Ready() bool {
	return len(s.notReady()) == 0
}

// notReady returns the parts of the service that are not ready, in the words
// /readyz reports.
func (s *Service) notReady() []string {
	var parts []string
	if !s.client.Connected() {
		parts = append(parts, "broker connection")
	}
	if !s.consumer.Ready() {
		parts = append(parts, "route consumers")
	}
	switch {
	case s.client.Blocked():
		parts = append(parts, "broker blocked the connection (memory or disk alarm)")
	case !s.publisher.Ready():
		parts = append(parts, "parking publisher")
	}
	return parts
}

func (s *Service) markStarted() {
	s.mu.Lock()
	defer s.mu.Unlock()
	select {
	case <-s.started:
	default:
		close(s.started)
	}
}
