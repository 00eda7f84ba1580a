package config

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/hookbus/hookbus/pkg/topology"
)

// Broker is the broker configuration that both services share. Embed it in a
// service's configuration struct.
type Broker struct {
	AMQPURL   string `envconfig:"AMQP_URL" default:"amqp://guest:guest@127.0.0.1:5672/" desc:"RabbitMQ AMQP URL (amqp:// or amqps://); may contain the password, which is never logged"`
	Namespace string `envconfig:"NAMESPACE" default:"webhooks" desc:"prefix of every exchange and queue name; deployments with different namespaces share a broker without touching each other's objects"`
}

// Validate returns every problem of b, joined.
func (b Broker) Validate() error {
	var errs []error
	if err := CheckAMQPURL(Prefix+"_AMQP_URL", b.AMQPURL); err != nil {
		errs = append(errs, err)
	}
	if _, err := topology.NewNames(b.Namespace); err != nil {
		errs = append(errs, fmt.Errorf("%s_NAMESPACE: %w", Prefix, err))
	}
	return errors.Join(errs...)
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
