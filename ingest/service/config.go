package service

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/hookbus/hookbus/pkg/config"
)

// MaxBodyLimit is the highest accepted HOOKBUS_MAX_BODY_BYTES. RabbitMQ 4.x
// rejects messages over 16 MiB by default (max_message_size; 3.x allows
// 128 MiB), and the headers travel in the same message.
const MaxBodyLimit = 15 << 20

// MinSpoolBytes is the lowest accepted HOOKBUS_SPOOL_MAX_BYTES.
const MinSpoolBytes = 1 << 20

// Config is the ingest service's configuration, read from HOOKBUS_*
// environment variables.
type Config struct {
	config.Broker
	config.Log

	Addr            string        `envconfig:"INGEST_ADDR" default:":8080" desc:"address the HTTP server listens on (host:port)"`
	MaxBodyBytes    int64         `envconfig:"MAX_BODY_BYTES" default:"10485760" desc:"largest accepted webhook body in bytes; larger requests get 413 (at most 15 MiB)"`
	PublishTimeout  time.Duration `envconfig:"PUBLISH_TIMEOUT" default:"5s" desc:"how long a request waits for the broker's confirm before it gets 503"`
	PublishChannels int           `envconfig:"PUBLISH_CHANNELS" default:"4" desc:"number of confirm-mode AMQP channels that requests share"`
	ReadTimeout     time.Duration `envconfig:"READ_TIMEOUT" default:"30s" desc:"how long a client may take to send a whole request, headers and body"`
	ShutdownGrace   time.Duration `envconfig:"SHUTDOWN_GRACE" default:"25s" desc:"how long in-flight requests may take to finish after SIGTERM"`
	Sources         string        `envconfig:"SOURCES" desc:"comma-separated name:kind pairs, for example github:github,billing:stripe; kinds: none, github, stripe, slack, shopify, standard, hmac; empty accepts every source name without verification"`
	SecretsDir      string        `envconfig:"SECRETS_DIR" desc:"directory holding one file per source, named after it, with its secrets one per line"`
	SpoolDir        string        `envconfig:"SPOOL_DIR" desc:"directory of the local spool file, which keeps webhooks on disk while the broker does not confirm them and publishes them later; empty turns the spool off, so that broker trouble answers 503"`
	SpoolMaxBytes   int64         `envconfig:"SPOOL_MAX_BYTES" default:"1073741824" desc:"largest total size of the spooled messages in bytes (at least 1 MiB); when a webhook does not fit, it gets 503"`

	// LookupEnv reads the per-source variables; nil means os.LookupEnv.
	LookupEnv func(string) (string, bool) `ignored:"true"`
}

// lookupEnv returns c.LookupEnv, or os.LookupEnv when it is nil.
func (c Config) lookupEnv() func(string) (string, bool) {
	if c.LookupEnv != nil {
		return c.LookupEnv
	}
	return os.LookupEnv
}

// Validate returns every problem of c, joined; each names its variable.
func (c Config) Validate() error {
	errs := []error{c.Broker.Validate(), c.Log.Validate()}
	if err := config.CheckListenAddr(config.Prefix+"_INGEST_ADDR", c.Addr); err != nil {
		errs = append(errs, err)
	}
	if c.MaxBodyBytes < 1 || c.MaxBodyBytes > MaxBodyLimit {
		errs = append(errs, fmt.Errorf("%s_MAX_BODY_BYTES: %d is out of range (want 1 to %d)", config.Prefix, c.MaxBodyBytes, MaxBodyLimit))
	}
	errs = append(errs,
		positive("PUBLISH_TIMEOUT", c.PublishTimeout),
		positive("READ_TIMEOUT", c.ReadTimeout),
		positive("SHUTDOWN_GRACE", c.ShutdownGrace),
	)
	if c.SpoolDir != "" && c.SpoolMaxBytes < MinSpoolBytes {
		errs = append(errs, fmt.Errorf("%s_SPOOL_MAX_BYTES: %d is out of range (want at least %d)", config.Prefix, c.SpoolMaxBytes, MinSpoolBytes))
	}
	if c.PublishChannels < 1 || c.PublishChannels > 64 {
		errs = append(errs, fmt.Errorf("%s_PUBLISH_CHANNELS: %d is out of range (want 1 to 64)", config.Prefix, c.PublishChannels))
	}
	if _, err := LoadSources(c, c.lookupEnv()); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func positive(variable string, d time.Duration) error {
	if d <= 0 {
		return fmt.Errorf("%s_%s: must be positive, got %s", config.Prefix, variable, d)
	}
	return nil
}
