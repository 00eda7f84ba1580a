package dlq

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// runWithoutBroker runs Run with a configuration that names no reachable
// broker, so every case here must end before Run connects.
func runWithoutBroker(t *testing.T, args ...string) (status int, stdout, stderr string) {
	t.Helper()
	t.Setenv("HOOKBUS_AMQP_URL", "amqp://guest:guest@127.0.0.1:1/")
	t.Setenv("HOOKBUS_NAMESPACE", "webhooks")
	var out, errOut bytes.Buffer
	status = Run(context.Background(), args, strings.NewReader(""), &out, &errOut)
	return status, out.String(), errOut.String()
}

func TestRunUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"no command", nil, "missing command"},
		{"unknown command", []string{"show"}, `unknown command "show"`},
		{"unknown flag", []string{"list", "-verbose"}, "flag provided but not defined: -verbose"},
		{"flag of another command", []string{"list", "-yes"}, "flag provided but not defined: -yes"},
		{"invalid queue", []string{"replay", "-queue", "dead"}, `invalid queue "dead"`},
		{"invalid duration", []string{"list", "-older-than", "3 days"}, "-older-than"},
		{"negative limit", []string{"list", "-limit", "-1"}, "invalid -limit -1"},
		{"negative age", []string{"purge", "-yes", "-newer-than", "-1h"}, "invalid -newer-than"},
		{"invalid source", []string{"list", "-source", "GitHub"}, `invalid -source "GitHub"`},
		{"invalid route", []string{"list", "-route", "Default"}, "invalid -route"},
		{"route of unrouted", []string{"list", "-queue", "unrouted", "-route", "default"}, "unrouted messages have no route"},
		{"positional argument", []string{"replay", "abc-123"}, `unexpected argument "abc-123"`},
		{"purge without terminal", []string{"purge"}, "pass -yes"},
		{"empty id", []string{"purge", "-yes", "-id", ""}, "empty message id"},
		{"only commas as ids", []string{"purge", "-yes", "-id", ",,"}, "empty message id"},
		{"empty type", []string{"purge", "-yes", "-type", ""}, "empty value for -type"},
		{"empty source", []string{"replay", "-source", ""}, "empty value for -source"},
		{"empty route", []string{"list", "-route", ""}, "empty value for -route"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, _, stderr := runWithoutBroker(t, tt.args...)

			if status != exitUsage {
				t.Errorf("status = %d, want %d; stderr: %s", status, exitUsage, stderr)
			}
			if !strings.Contains(stderr, tt.want) {
				t.Errorf("stderr does not contain %q: %s", tt.want, stderr)
			}
		})
	}
}

func TestRunInvalidConfig(t *testing.T) {
	t.Setenv("HOOKBUS_AMQP_URL", "http://127.0.0.1:5672/")
	t.Setenv("HOOKBUS_NAMESPACE", "no spaces")
	var stdout, stderr bytes.Buffer

	status := Run(context.Background(), []string{"list"}, strings.NewReader(""), &stdout, &stderr)

	if status != exitUsage {
		t.Errorf("status = %d, want %d", status, exitUsage)
	}
	for _, variable := range []string{"HOOKBUS_AMQP_URL", "HOOKBUS_NAMESPACE"} {
		if !strings.Contains(stderr.String(), variable) {
			t.Errorf("stderr does not name %s: %s", variable, stderr.String())
		}
	}
}

func TestRunBrokerUnreachable(t *testing.T) {
	status, _, stderr := runWithoutBroker(t, "list")

	if status != exitFailed {
		t.Errorf("status = %d, want %d", status, exitFailed)
	}
	if !strings.Contains(stderr, "check HOOKBUS_AMQP_URL") {
		t.Errorf("stderr does not say what to check: %s", stderr)
	}
	if strings.Contains(stderr, "guest:guest") {
		t.Errorf("stderr shows the password: %s", stderr)
	}
}

func TestRunHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"-h"}, []string{"Usage: processor dlq <command>", "list", "replay", "purge", "HOOKBUS_AMQP_URL", "HOOKBUS_NAMESPACE"}},
		{[]string{"list", "-h"}, []string{"Usage: processor dlq list", "-queue", "-limit", "-json", "-older-than"}},
		{[]string{"replay", "-h"}, []string{"Usage: processor dlq replay", "-dry-run", "-id", "-route"}},
		{[]string{"purge", "-help"}, []string{"Usage: processor dlq purge", "-yes", "-source", "-type"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			status, stdout, stderr := runWithoutBroker(t, tt.args...)

			if status != exitOK {
				t.Errorf("status = %d, want %d; stderr: %s", status, exitOK, stderr)
			}
			for _, want := range tt.want {
				if !strings.Contains(stdout, want) {
					t.Errorf("help does not contain %q:\n%s", want, stdout)
				}
			}
		})
	}
}

func TestParseOptionsIDs(t *testing.T) {
	opts, err := parseOptions("list", []string{"-id", "a,b", "-id", " c ", "-id", "a"})
	if err != nil {
		t.Fatalf("parse: %v", err)
	}

	if got := opts.filter.ids.String(); got != "a,b,c" {
		t.Errorf("ids = %s, want a,b,c", got)
	}
	if opts.limit != defaultListLimit || opts.queue != queueParked {
		t.Errorf("limit %d, queue %s, want defaults %d and parked", opts.limit, opts.queue, defaultListLimit)
	}
}

func TestAskDeleteReply(t *testing.T) {
	tests := []struct {
		reply string
		want  bool
	}{
		{"y\n", true},
		{"YES\n", true},
		{" yes ", true},
		{"\n", false},
		{"n\n", false},
		{"yep\n", false},
		{"", false},
	}
	for _, tt := range tests {
		var stderr bytes.Buffer
		c := &commandRun{stdin: strings.NewReader(tt.reply), stderr: &stderr}

		got, err := c.askDelete("webhooks.parked")(3)

		if err != nil {
			t.Errorf("reply %q: %v", tt.reply, err)
		}
		if got != tt.want {
			t.Errorf("reply %q confirmed = %v, want %v", tt.reply, got, tt.want)
		}
		if stderr.String() != "Delete 3 message(s) from webhooks.parked? [y/N] " {
			t.Errorf("prompt = %q", stderr.String())
		}
	}
}
