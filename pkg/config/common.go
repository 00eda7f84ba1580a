package config

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"

	"github.com/hookbus/hookbus/pkg/rabbit"
	"github.com/hookbus/hookbus/pkg/topology"
)

// Broker is the broker configuration that both services share. Embed it in a
// service's configuration struct.
type Broker struct {
	AMQPURL           string `envconfig:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/" desc:"RabbitMQ AMQP URL (amqp:// or amqps://), or several separated by commas for the nodes of a cluster; may contain the password, which is never logged"`
	Namespace         string `envconfig:"NAMESPACE" default:"webhooks" desc:"prefix of every exchange and queue name; deployments with different namespaces share a broker without touching each other's objects"`
	AMQPTLSCAFile     string `envconfig:"AMQP_TLS_CA_FILE" desc:"PEM file of the CA certificates that sign the broker's certificate, for amqps:// (default: the system's)"`
	AMQPTLSCertFile   string `envconfig:"AMQP_TLS_CERT_FILE" desc:"PEM file of the client certificate for amqps://, with HOOKBUS_AMQP_TLS_KEY_FILE"`
	AMQPTLSKeyFile    string `envconfig:"AMQP_TLS_KEY_FILE" desc:"PEM file of the client certificate's private key"`
	AMQPTLSServerName string `envconfig:"AMQP_TLS_SERVER_NAME" desc:"name expected in the broker's certificate (default: the URL's host)"`
}

// Validate returns every problem of b, joined.
func (b Broker) Validate() error {
	var errs []error
	if len(rabbit.SplitURLs(b.AMQPURL)) == 0 {
		errs = append(errs, fmt.Errorf("%s_AMQP_URL: missing; want amqp://user:password@host:5672/vhost", Prefix))
	}
	for _, u := range rabbit.SplitURLs(b.AMQPURL) {
		if err := CheckAMQPURL(Prefix+"_AMQP_URL", u); err != nil {
			errs = append(errs, err)
		}
	}
	if _, err := topology.NewNames(b.Namespace); err != nil {
		errs = append(errs, fmt.Errorf("%s_NAMESPACE: %w", Prefix, err))
	}
	if _, err := b.TLSConfig(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// TLSConfig returns the TLS configuration for amqps:// URLs that the
// AMQP_TLS_* variables describe, or nil when none is set. Its errors name
// the variable.
func (b Broker) TLSConfig() (*tls.Config, error) {
	if b.AMQPTLSCAFile == "" && b.AMQPTLSCertFile == "" && b.AMQPTLSKeyFile == "" && b.AMQPTLSServerName == "" {
		return nil, nil
	}
	cfg := &tls.Config{ServerName: b.AMQPTLSServerName, MinVersion: tls.VersionTLS12}
	var errs []error
	if b.AMQPTLSCAFile != "" {
		pem, err := os.ReadFile(b.AMQPTLSCAFile)
		pool := x509.NewCertPool()
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s_AMQP_TLS_CA_FILE: %w", Prefix, err))
		case !pool.AppendCertsFromPEM(pem):
			errs = append(errs, fmt.Errorf("%s_AMQP_TLS_CA_FILE: no PEM certificate in %s", Prefix, b.AMQPTLSCAFile))
		default:
			cfg.RootCAs = pool
		}
	}
	switch {
	case (b.AMQPTLSCertFile == "") != (b.AMQPTLSKeyFile == ""):
		errs = append(errs, fmt.Errorf("%s_AMQP_TLS_CERT_FILE and %s_AMQP_TLS_KEY_FILE: set both or neither", Prefix, Prefix))
	case b.AMQPTLSCertFile != "":
		cert, err := tls.LoadX509KeyPair(b.AMQPTLSCertFile, b.AMQPTLSKeyFile)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s_AMQP_TLS_CERT_FILE: load client certificate: %w", Prefix, err))
		} else {
			cfg.Certificates = []tls.Certificate{cert}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return cfg, nil
}

// Names returns the topology names of b's namespace. Call it after Validate.
func (b Broker) Names() topology.Names {
	names, err := topology.NewNames(b.Namespace)
	if err != nil {
		panic("config: Names called on an invalid namespace: " + err.Error())
	}
	return names
}

// Log is the logging configuration that both services share.
type Log struct {
	LogLevel  string `envconfig:"LOG_LEVEL" default:"info" desc:"minimum log level: debug, info, warn or error"`
	LogFormat string `envconfig:"LOG_FORMAT" default:"json" desc:"log format: json or text"`
}

// Validate returns every problem of l, joined.
func (l Log) Validate() error {
	var errs []error
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.LogLevel)); err != nil {
		errs = append(errs, fmt.Errorf("%s_LOG_LEVEL: invalid level %q (want debug, info, warn or error)", Prefix, l.LogLevel))
	}
	if f := strings.ToLower(l.LogFormat); f != "json" && f != "text" {
		errs = append(errs, fmt.Errorf("%s_LOG_FORMAT: invalid format %q (want json or text)", Prefix, l.LogFormat))
	}
	return errors.Join(errs...)
}

// NewLogger returns a logger that writes to w at l's level and format. Call
// it after Validate.
func (l Log) NewLogger(w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(l.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if strings.ToLower(l.LogFormat) == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}
