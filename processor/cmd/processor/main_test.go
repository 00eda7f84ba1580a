package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestRunHelp(t *testing.T) {
	for _, arg := range []string{"-h", "--help", "help"} {
		t.Run(arg, func(t *testing.T) {
			var stdout, stderr bytes.Buffer

			status := run([]string{arg}, &stdout, &stderr)

			if status != exitOK {
				t.Errorf("status = %d, want %d; stderr: %s", status, exitOK, stderr.String())
			}
			for _, variable := range []string{
				"HOOKBUS_AMQP_URL",
				"HOOKBUS_NAMESPACE",
				"HOOKBUS_LOG_LEVEL",
				"HOOKBUS_LOG_FORMAT",
				"HOOKBUS_PROCESSOR_ADDR",
				"HOOKBUS_PREFETCH",
				"HOOKBUS_CONCURRENCY",
				"HOOKBUS_HANDLER_TIMEOUT",
				"HOOKBUS_SHUTDOWN_GRACE",
			} {
				if !strings.Contains(stdout.String(), variable) {
					t.Errorf("help does not list %s", variable)
				}
			}
			if stderr.Len() != 0 {
				t.Errorf("stderr = %q, want empty", stderr.String())
			}
		})
	}
}

func TestRunUnknownArgument(t *testing.T) {
	var stdout, stderr bytes.Buffer

	status := run([]string{"--prefetch=10"}, &stdout, &stderr)

	if status != exitUsage {
		t.Errorf("status = %d, want %d", status, exitUsage)
	}
	if !strings.Contains(stderr.String(), `unknown argument "--prefetch=10"`) {
		t.Errorf("stderr does not name the argument: %s", stderr.String())
	}
}

func TestRunInvalidConfigReportsEveryProblem(t *testing.T) {
	t.Setenv("HOOKBUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
	t.Setenv("HOOKBUS_NAMESPACE", "webhooks")
	t.Setenv("HOOKBUS_PREFETCH", "0")
	t.Setenv("HOOKBUS_CONCURRENCY", "0")
	t.Setenv("HOOKBUS_LOG_FORMAT", "xml")
	var stdout, stderr bytes.Buffer

	status := run(nil, &stdout, &stderr)

	if status != exitUsage {
		t.Errorf("status = %d, want %d", status, exitUsage)
	}
	for _, variable := range []string{"HOOKBUS_PREFETCH", "HOOKBUS_CONCURRENCY", "HOOKBUS_LOG_FORMAT"} {
		if !strings.Contains(stderr.String(), variable) {
			t.Errorf("stderr does not name %s: %s", variable, stderr.String())
		}
	}
}

func TestRunUnparsableConfigReportsEveryProblem(t *testing.T) {
	t.Setenv("HOOKBUS_PREFETCH", "many")
	t.Setenv("HOOKBUS_HANDLER_TIMEOUT", "30")
	var stdout, stderr bytes.Buffer

	status := run(nil, &stdout, &stderr)

	if status != exitUsage {
		t.Errorf("status = %d, want %d", status, exitUsage)
	}
	for _, want := range []string{`HOOKBUS_PREFETCH: invalid value "many"`, `HOOKBUS_HANDLER_TIMEOUT: invalid value "30"`} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not contain %q: %s", want, stderr.String())
		}
	}
}
