package config_test

import (
	"bytes"
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/hookbus/hookbus/pkg/config"
)

// serviceSpec is a configuration like a service's, with the shared structs
// embedded and fields of several types that envconfig parses.
type serviceSpec struct {
	config.Broker
	config.Log
	ListenAddr   string        `envconfig:"TEST_LISTEN_ADDR" default:":8080" desc:"address to listen on"`
	MaxBodyBytes int64         `envconfig:"TEST_MAX_BODY_BYTES" default:"1048576" desc:"maximum request body size in bytes"`
	Timeout      time.Duration `envconfig:"TEST_TIMEOUT" default:"5s" desc:"publish timeout"`
	Debug        bool          `envconfig:"TEST_DEBUG" default:"false" desc:"enable debug endpoints"`
}

func TestLoadDefaults(t *testing.T) {
	for _, variable := range []string{
		"HOOKBUS_AMQP_URL", "HOOKBUS_NAMESPACE", "HOOKBUS_LOG_LEVEL", "HOOKBUS_LOG_FORMAT",
		"HOOKBUS_TEST_LISTEN_ADDR", "HOOKBUS_TEST_MAX_BODY_BYTES", "HOOKBUS_TEST_TIMEOUT", "HOOKBUS_TEST_DEBUG",
	} {
		unsetenv(t, variable)
	}

	var spec serviceSpec
	if err := config.Load(&spec); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if spec.AMQPURL != "amqp://guest:guest@127.0.0.1:5672/" {
		t.Errorf("AMQPURL = %q, want the default", spec.AMQPURL)
	}
	if spec.Namespace != "webhooks" {
		t.Errorf("Namespace = %q, want webhooks", spec.Namespace)
	}
	if spec.LogLevel != "info" {
		t.Errorf("LogLevel = %q, want info", spec.LogLevel)
	}
	if spec.LogFormat != "json" {
		t.Errorf("LogFormat = %q, want json", spec.LogFormat)
	}
	if spec.ListenAddr != ":8080" {
		t.Errorf("ListenAddr = %q, want :8080", spec.ListenAddr)
	}
	if spec.MaxBodyBytes != 1<<20 {
		t.Errorf("MaxBodyBytes = %d, want %d", spec.MaxBodyBytes, 1<<20)
	}
	if spec.Timeout != 5*time.Second {
		t.Errorf("Timeout = %s, want 5s", spec.Timeout)
	}
	if spec.Debug {
		t.Error("Debug = true, want false")
	}
}

// unsetenv removes variable from the environment until the test ends.
func unsetenv(t *testing.T, variable string) {
	t.Helper()
	t.Setenv(variable, "") // restores the current value at cleanup
	if err := os.Unsetenv(variable); err != nil {
		t.Fatalf("unset %s: %v", variable, err)
	}
}

func TestLoadFromEnvironment(t *testing.T) {
	t.Setenv("HOOKBUS_AMQP_URL", "amqps://hookbus:pw@rabbit.internal:5671/prod")
	t.Setenv("HOOKBUS_NAMESPACE", "prod")
	t.Setenv("HOOKBUS_LOG_LEVEL", "debug")
	t.Setenv("HOOKBUS_TEST_TIMEOUT", "250ms")
	t.Setenv("HOOKBUS_TEST_DEBUG", "true")

	var spec serviceSpec
	if err := config.Load(&spec); err != nil {
		t.Fatalf("Load: %v", err)
	}
	if spec.AMQPURL != "amqps://hookbus:pw@rabbit.internal:5671/prod" {
		t.Errorf("AMQPURL = %q, want the value from the environment", spec.AMQPURL)
	}
	if spec.Namespace != "prod" {
		t.Errorf("Namespace = %q, want prod", spec.Namespace)
	}
	if spec.LogLevel != "debug" {
		t.Errorf("LogLevel = %q, want debug", spec.LogLevel)
	}
	if spec.Timeout != 250*time.Millisecond {
		t.Errorf("Timeout = %s, want 250ms", spec.Timeout)
	}
	if !spec.Debug {
		t.Error("Debug = false, want true")
	}
}

func TestLoadReportsEveryInvalidVariable(t *testing.T) {
	t.Setenv("HOOKBUS_TEST_MAX_BODY_BYTES", "1MB")
	t.Setenv("HOOKBUS_TEST_TIMEOUT", "soon")
	t.Setenv("HOOKBUS_TEST_DEBUG", "maybe")

	var spec serviceSpec
	err := config.Load(&spec)
	if err == nil {
		t.Fatal("Load returned nil, want an error naming every invalid variable")
	}
	msg := err.Error()
	for _, want := range []string{
		`HOOKBUS_TEST_MAX_BODY_BYTES: invalid value "1MB" (want a whole number)`,
		`HOOKBUS_TEST_TIMEOUT: invalid value "soon" (want a duration such as 5s or 250ms)`,
		`HOOKBUS_TEST_DEBUG: invalid value "maybe" (want true or false)`,
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("error %q does not contain %q", msg, want)
		}
	}
	if strings.Contains(msg, "MaxBodyBytes") || strings.Contains(msg, "Timeout") {
		t.Errorf("error %q contains Go field names", msg)
	}
}

func TestLoadRejectsNonStruct(t *testing.T) {
	var notStruct string
	if err := config.Load(&notStruct); err == nil {
		t.Error("Load(*string) returned nil, want an error")
	}
	if err := config.Load(serviceSpec{}); err == nil {
		t.Error("Load(struct value) returned nil, want an error")
	}
}

func TestUsageListsVariablesWithoutValues(t *testing.T) {
	const password = "s3cret-Passw0rd"
	t.Setenv("HOOKBUS_AMQP_URL", "amqp://hookbus:"+password+"@rabbit.internal:5672/")
	t.Setenv("HOOKBUS_NAMESPACE", "from-the-environment")

	var out bytes.Buffer
	if err := config.Usage(&out, &serviceSpec{}); err != nil {
		t.Fatalf("Usage: %v", err)
	}
	text := out.String()

	rows := map[string]string{
		"HOOKBUS_AMQP_URL":            "amqp://guest:guest@127.0.0.1:5672/",
		"HOOKBUS_NAMESPACE":           "webhooks",
		"HOOKBUS_LOG_LEVEL":           "info",
		"HOOKBUS_LOG_FORMAT":          "json",
		"HOOKBUS_TEST_LISTEN_ADDR":    ":8080",
		"HOOKBUS_TEST_MAX_BODY_BYTES": "1048576",
		"HOOKBUS_TEST_TIMEOUT":        "5s",
		"HOOKBUS_TEST_DEBUG":          "false",
	}
	lines := strings.Split(text, "\n")
	for variable, def := range rows {
		line := lineStarting(lines, variable+" ")
		if line == "" {
			t.Errorf("usage has no row for %s:\n%s", variable, text)
			continue
		}
		if fields := strings.Fields(line); len(fields) < 3 || fields[1] != def {
			t.Errorf("usage row %q, want default %q and a description", line, def)
		}
	}
	if !strings.HasPrefix(text, "VARIABLE") {
		t.Errorf("usage does not start with the header row:\n%s", text)
	}
	if strings.Contains(text, password) {
		t.Errorf("usage contains the password set in the environment:\n%s", text)
	}
	if strings.Contains(text, "rabbit.internal") || strings.Contains(text, "from-the-environment") {
		t.Errorf("usage contains values set in the environment:\n%s", text)
	}
}

func lineStarting(lines []string, prefix string) string {
	for _, line := range lines {
		if strings.HasPrefix(line, prefix) {
			return line
		}
	}
	return ""
}

func TestBrokerValidate(t *testing.T) {
	tests := []struct {
		name      string
		broker    config.Broker
		variables []string // variables the error must name; none means valid
	}{
		{"defaults", config.Broker{AMQPURL: "amqp://guest:guest@127.0.0.1:5672/", Namespace: "webhooks"}, nil},
		{"amqps with vhost", config.Broker{AMQPURL: "amqps://u:p@rabbit.example:5671/prod", Namespace: "prod.eu-1"}, nil},
		{"empty URL", config.Broker{AMQPURL: "", Namespace: "webhooks"}, []string{"HOOKBUS_AMQP_URL"}},
		{"http URL", config.Broker{AMQPURL: "http://127.0.0.1:15672/", Namespace: "webhooks"}, []string{"HOOKBUS_AMQP_URL"}},
		{"URL without host", config.Broker{AMQPURL: "amqp:///vhost", Namespace: "webhooks"}, []string{"HOOKBUS_AMQP_URL"}},
		{"not a URL", config.Broker{AMQPURL: "127.0.0.1:5672", Namespace: "webhooks"}, []string{"HOOKBUS_AMQP_URL"}},
		{"empty namespace", config.Broker{AMQPURL: "amqp://127.0.0.1/", Namespace: ""}, []string{"HOOKBUS_NAMESPACE"}},
		{"namespace with slash", config.Broker{AMQPURL: "amqp://127.0.0.1/", Namespace: "a/b"}, []string{"HOOKBUS_NAMESPACE"}},
		{"namespace starting with dot", config.Broker{AMQPURL: "amqp://127.0.0.1/", Namespace: ".hidden"}, []string{"HOOKBUS_NAMESPACE"}},
		{"namespace of 101 bytes", config.Broker{AMQPURL: "amqp://127.0.0.1/", Namespace: strings.Repeat("n", 101)}, []string{"HOOKBUS_NAMESPACE"}},
		{"both invalid", config.Broker{AMQPURL: "redis://127.0.0.1/", Namespace: "a b"}, []string{"HOOKBUS_AMQP_URL", "HOOKBUS_NAMESPACE"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assertNamesVariables(t, tc.broker.Validate(), tc.variables)
		})
	}
}

func TestBrokerValidateHidesPassword(t *testing.T) {
	err := config.Broker{AMQPURL: "http://user:hunter2-secret@127.0.0.1/", Namespace: "webhooks"}.Validate()
	if err == nil {
		t.Fatal("Validate returned nil for an http URL")
	}
	if strings.Contains(err.Error(), "hunter2-secret") {
		t.Errorf("error %q contains the password", err)
	}
}

func TestBrokerNames(t *testing.T) {
	names := config.Broker{AMQPURL: "amqp://127.0.0.1/", Namespace: "prod"}.Names()
	if got := names.Exchange(); got != "prod.events" {
		t.Errorf("Exchange() = %q, want prod.events", got)
	}
}

func TestLogValidate(t *testing.T) {
	tests := []struct {
		name      string
		log       config.Log
		variables []string // variables the error must name; none means valid
	}{
		{"debug json", config.Log{LogLevel: "debug", LogFormat: "json"}, nil},
		{"info text", config.Log{LogLevel: "info", LogFormat: "text"}, nil},
		{"warn", config.Log{LogLevel: "warn", LogFormat: "json"}, nil},
		{"error", config.Log{LogLevel: "error", LogFormat: "json"}, nil},
		{"upper case", config.Log{LogLevel: "WARN", LogFormat: "TEXT"}, nil},
		{"unknown level", config.Log{LogLevel: "verbose", LogFormat: "json"}, []string{"HOOKBUS_LOG_LEVEL"}},
		{"empty level", config.Log{LogLevel: "", LogFormat: "json"}, []string{"HOOKBUS_LOG_LEVEL"}},
		{"unknown format", config.Log{LogLevel: "info", LogFormat: "yaml"}, []string{"HOOKBUS_LOG_FORMAT"}},
		{"empty format", config.Log{LogLevel: "info", LogFormat: ""}, []string{"HOOKBUS_LOG_FORMAT"}},
		{"both invalid", config.Log{LogLevel: "loud", LogFormat: "xml"}, []string{"HOOKBUS_LOG_LEVEL", "HOOKBUS_LOG_FORMAT"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assertNamesVariables(t, tc.log.Validate(), tc.variables)
		})
	}
}

// assertNamesVariables checks that err is nil when variables is empty, and
// otherwise that err names each variable.
func assertNamesVariables(t *testing.T, err error, variables []string) {
	t.Helper()
	if len(variables) == 0 {
		if err != nil {
			t.Errorf("Validate = %v, want nil", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("Validate returned nil, want an error naming %v", variables)
	}
	for _, v := range variables {
		if !strings.Contains(err.Error(), v) {
			t.Errorf("error %q does not name %s", err, v)
		}
	}
}

func TestNewLoggerLevelAndFormat(t *testing.T) {
	var out bytes.Buffer
	log := config.Log{LogLevel: "warn", LogFormat: "json"}.NewLogger(&out)
	log.Info("below the level")
	log.Warn("at the level", "queue_name", "webhooks.parked")

	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("logger wrote %d lines, want 1:\n%s", len(lines), out.String())
	}
	var record map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &record); err != nil {
		t.Fatalf("log line is not JSON: %v: %s", err, lines[0])
	}
	if record["msg"] != "at the level" {
		t.Errorf("msg = %v, want %q", record["msg"], "at the level")
	}
	if record["queue_name"] != "webhooks.parked" {
		t.Errorf("queue_name = %v, want webhooks.parked", record["queue_name"])
	}

	out.Reset()
	config.Log{LogLevel: "info", LogFormat: "text"}.NewLogger(&out).Info("started", "port", 8080)
	if got := out.String(); !strings.Contains(got, "msg=started port=8080") {
		t.Errorf("text log = %q, want a logfmt line with msg=started port=8080", got)
	}
}

func TestCheckListenAddr(t *testing.T) {
	tests := []struct {
		value string
		valid bool
	}{
		{":8080", true},
		{"127.0.0.1:8080", true},
		{"[::1]:0", true},
		{"8080", false},
		{"", false},
		{"localhost", false},
	}
	for _, tc := range tests {
		err := config.CheckListenAddr("HOOKBUS_LISTEN_ADDR", tc.value)
		if tc.valid && err != nil {
			t.Errorf("CheckListenAddr(%q) = %v, want nil", tc.value, err)
		}
		if !tc.valid && (err == nil || !strings.Contains(err.Error(), "HOOKBUS_LISTEN_ADDR")) {
			t.Errorf("CheckListenAddr(%q) = %v, want an error naming HOOKBUS_LISTEN_ADDR", tc.value, err)
		}
	}
}
