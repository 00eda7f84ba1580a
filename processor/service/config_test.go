package service_test

import (
	"bytes"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/processor/service"
)

// defaultConfig loads the configuration from an environment without any
// HOOKBUS_ variable, so it has every default.
func defaultConfig(t *testing.T) service.Config {
	t.Helper()
	for _, key := range envKeys(reflect.TypeFor[service.Config]()) {
		t.Setenv(key, "") // restores the variable when the test ends
		if err := os.Unsetenv(key); err != nil {
			t.Fatal(err)
		}
	}
	var cfg service.Config
	if err := config.Load(&cfg); err != nil {
		t.Fatalf("load defaults: %v", err)
	}
	return cfg
}

// envKeys returns the environment variable of every field of a config struct
// type, including the fields of embedded structs.
func envKeys(typ reflect.Type) []string {
	var keys []string
	for field := range typ.Fields() {
		if field.Anonymous && field.Type.Kind() == reflect.Struct {
			keys = append(keys, envKeys(field.Type)...)
			continue
		}
		if name, ok := field.Tag.Lookup("envconfig"); ok {
			keys = append(keys, config.Prefix+"_"+name)
		}
	}
	return keys
}

func TestConfigDefaultsValid(t *testing.T) {
	cfg := defaultConfig(t)

	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate of the defaults = %v, want nil", err)
	}
	if cfg.Addr != ":8081" {
		t.Errorf("Addr = %q, want :8081", cfg.Addr)
	}
	if cfg.Prefetch != 200 {
		t.Errorf("Prefetch = %d, want 200", cfg.Prefetch)
	}
	if cfg.Concurrency != 32 {
		t.Errorf("Concurrency = %d, want 32", cfg.Concurrency)
	}
	if cfg.HandlerTimeout != 30*time.Second {
		t.Errorf("HandlerTimeout = %s, want 30s", cfg.HandlerTimeout)
	}
	if cfg.ShutdownGrace != 25*time.Second {
		t.Errorf("ShutdownGrace = %s, want 25s", cfg.ShutdownGrace)
	}
}

func TestConfigLoadsEnvironment(t *testing.T) {
	defaultConfig(t)
	t.Setenv("HOOKBUS_PROCESSOR_ADDR", "127.0.0.1:9000")
	t.Setenv("HOOKBUS_PREFETCH", "50")
	t.Setenv("HOOKBUS_CONCURRENCY", "8")
	t.Setenv("HOOKBUS_HANDLER_TIMEOUT", "2m")
	t.Setenv("HOOKBUS_SHUTDOWN_GRACE", "40s")

	var cfg service.Config
	if err := config.Load(&cfg); err != nil {
		t.Fatalf("Load: %v", err)
	}

	if cfg.Addr != "127.0.0.1:9000" {
		t.Errorf("Addr = %q, want 127.0.0.1:9000", cfg.Addr)
	}
	if cfg.Prefetch != 50 {
		t.Errorf("Prefetch = %d, want 50", cfg.Prefetch)
	}
	if cfg.Concurrency != 8 {
		t.Errorf("Concurrency = %d, want 8", cfg.Concurrency)
	}
	if cfg.HandlerTimeout != 2*time.Minute {
		t.Errorf("HandlerTimeout = %s, want 2m", cfg.HandlerTimeout)
	}
	if cfg.ShutdownGrace != 40*time.Second {
		t.Errorf("ShutdownGrace = %s, want 40s", cfg.ShutdownGrace)
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name   string
		modify func(*service.Config)
		want   []string // variables the error must name; none means valid
	}{
		{
			name:   "limits inclusive",
			modify: func(c *service.Config) { c.Prefetch, c.Concurrency = 65535, 10000 },
		},
		{
			name: "minimums",
			modify: func(c *service.Config) {
				c.Prefetch, c.Concurrency, c.HandlerTimeout, c.ShutdownGrace = 1, 1, time.Millisecond, time.Millisecond
			},
		},
		{
			name:   "handler timeout just below consumer timeout",
			modify: func(c *service.Config) { c.HandlerTimeout = 30*time.Minute - time.Second },
		},
		{
			name:   "prefetch zero",
			modify: func(c *service.Config) { c.Prefetch = 0 },
			want:   []string{"HOOKBUS_PREFETCH"},
		},
		{
			name:   "prefetch above uint16",
			modify: func(c *service.Config) { c.Prefetch = 65536 },
			want:   []string{"HOOKBUS_PREFETCH"},
		},
		{
			name:   "concurrency zero",
			modify: func(c *service.Config) { c.Concurrency = 0 },
			want:   []string{"HOOKBUS_CONCURRENCY"},
		},
		{
			name:   "concurrency too high",
			modify: func(c *service.Config) { c.Concurrency = 10001 },
			want:   []string{"HOOKBUS_CONCURRENCY"},
		},
		{
			name:   "handler timeout zero",
			modify: func(c *service.Config) { c.HandlerTimeout = 0 },
			want:   []string{"HOOKBUS_HANDLER_TIMEOUT"},
		},
		{
			name:   "handler timeout negative",
			modify: func(c *service.Config) { c.HandlerTimeout = -time.Second },
			want:   []string{"HOOKBUS_HANDLER_TIMEOUT"},
		},
		{
			name:   "handler timeout at consumer timeout",
			modify: func(c *service.Config) { c.HandlerTimeout = 30 * time.Minute },
			want:   []string{"HOOKBUS_HANDLER_TIMEOUT"},
		},
		{
			name:   "shutdown grace zero",
			modify: func(c *service.Config) { c.ShutdownGrace = 0 },
			want:   []string{"HOOKBUS_SHUTDOWN_GRACE"},
		},
		{
			name:   "listen address without port",
			modify: func(c *service.Config) { c.Addr = "localhost" },
			want:   []string{"HOOKBUS_PROCESSOR_ADDR"},
		},
		{
			name:   "broker url scheme",
			modify: func(c *service.Config) { c.AMQPURL = "http://127.0.0.1:5672/" },
			want:   []string{"HOOKBUS_AMQP_URL"},
		},
		{
			name:   "namespace with slash",
			modify: func(c *service.Config) { c.Namespace = "a/b" },
			want:   []string{"HOOKBUS_NAMESPACE"},
		},
		{
			name:   "log level",
			modify: func(c *service.Config) { c.LogLevel = "verbose" },
			want:   []string{"HOOKBUS_LOG_LEVEL"},
		},
		{
			name: "every problem at once",
			modify: func(c *service.Config) {
				c.AMQPURL = "not a url"
				c.Namespace = ""
				c.LogLevel = "loud"
				c.LogFormat = "xml"
				c.Addr = "8081"
				c.Prefetch = -1
				c.Concurrency = 20000
				c.HandlerTimeout = time.Hour
				c.ShutdownGrace = -time.Second
			},
			want: []string{
				"HOOKBUS_AMQP_URL",
				"HOOKBUS_NAMESPACE",
				"HOOKBUS_LOG_LEVEL",
				"HOOKBUS_LOG_FORMAT",
				"HOOKBUS_PROCESSOR_ADDR",
				"HOOKBUS_PREFETCH",
				"HOOKBUS_CONCURRENCY",
				"HOOKBUS_HANDLER_TIMEOUT",
				"HOOKBUS_SHUTDOWN_GRACE",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := defaultConfig(t)
			tt.modify(&cfg)

			err := cfg.Validate()

			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Validate = nil, want an error naming %v", tt.want)
			}
			for _, variable := range tt.want {
				if !strings.Contains(err.Error(), variable+":") {
					t.Errorf("error does not name %s:\n%v", variable, err)
				}
			}
			if lines := strings.Count(err.Error(), "\n") + 1; lines != len(tt.want) {
				t.Errorf("error has %d lines, want one for each of %d problems:\n%v", lines, len(tt.want), err)
			}
		})
	}
}

func TestUsageListsEveryVariable(t *testing.T) {
	var out bytes.Buffer

	if err := service.Usage(&out); err != nil {
		t.Fatalf("Usage: %v", err)
	}

	text := out.String()
	if !strings.HasPrefix(text, "hookbus processor consumes") {
		t.Errorf("help does not start with the description:\n%s", text)
	}
	keys := envKeys(reflect.TypeFor[service.Config]())
	if len(keys) != 16 {
		t.Errorf("Config has %d variables %v, want 16", len(keys), keys)
	}
	for _, key := range keys {
		if !strings.Contains(text, "\n"+key+" ") {
			t.Errorf("help does not list %s:\n%s", key, text)
		}
	}
	for _, want := range []string{":8081", "200", "32", "30s", "25s"} {
		if !strings.Contains(text, " "+want+" ") {
			t.Errorf("help does not show the default %s:\n%s", want, text)
		}
	}
}
