package service_test

import (
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hookbus/hookbus/ingest/service"
	"github.com/hookbus/hookbus/ingest/verify"
	"github.com/hookbus/hookbus/pkg/config"
)

// srcLookup returns a LookupEnv function that reads env instead of the
// process environment.
func srcLookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		value, ok := env[name]
		return value, ok
	}
}

// srcStandardSecret returns a Standard Webhooks secret: "whsec_" and the
// base64 of key.
func srcStandardSecret(key string) string {
	return "whsec_" + base64.StdEncoding.EncodeToString([]byte(key))
}

// srcSecretsDir writes one file per source into a new directory and returns
// the directory.
func srcSecretsDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatalf("write secret file: %v", err)
		}
	}
	return dir
}

// srcCheckSigned fails unless the source's verifier accepts body signed with
// secret at signedAt, checked at now.
func srcCheckSigned(t *testing.T, src *service.Source, secret string, opts verify.Options, signedAt, now time.Time) {
	t.Helper()
	body := []byte(`{"type":"test.event","id":"evt_1"}`)
	header, err := verify.Sign(src.Verifier.Kind(), []byte(secret), body, signedAt, opts)
	if err != nil {
		t.Fatalf("sign for source %q: %v", src.Name, err)
	}
	if err := src.Verifier.Verify(verify.Request{Header: header, Body: body}, now); err != nil {
		t.Errorf("source %q rejected a body signed with one of its secrets: %v", src.Name, err)
	}
}

// srcCheckRejected fails unless the source's verifier rejects body signed
// with secret at signedAt with an error wrapping want.
func srcCheckRejected(t *testing.T, src *service.Source, secret string, opts verify.Options, signedAt, now time.Time, want error) {
	t.Helper()
	body := []byte(`{"type":"test.event","id":"evt_1"}`)
	header, err := verify.Sign(src.Verifier.Kind(), []byte(secret), body, signedAt, opts)
	if err != nil {
		t.Fatalf("sign for source %q: %v", src.Name, err)
	}
	err = src.Verifier.Verify(verify.Request{Header: header, Body: body}, now)
	if !errors.Is(err, want) {
		t.Errorf("source %q: Verify error = %v, want %v", src.Name, err, want)
	}
}

func TestLoadSourcesEmptyIsOpen(t *testing.T) {
	t.Parallel()
	for _, value := range []string{"", "   ", "\t\n"} {
		sources, err := service.LoadSources(service.Config{Sources: value}, srcLookup(nil))
		if err != nil {
			t.Fatalf("LoadSources(%q): %v", value, err)
		}
		if !sources.Open() {
			t.Errorf("LoadSources(%q).Open() = false, want true", value)
		}
		if names := sources.Names(); len(names) != 0 {
			t.Errorf("LoadSources(%q).Names() = %v, want none", value, names)
		}
		if names := sources.Unverified(); len(names) != 0 {
			t.Errorf("LoadSources(%q).Unverified() = %v, want none", value, names)
		}

		for _, name := range []string{"github", "billing-eu", "my_app", "a", strings.Repeat("z", 64)} {
			src := sources.Lookup(name)
			if src == nil {
				t.Errorf("open sources: Lookup(%q) = nil, want a source", name)
				continue
			}
			if src.Name != name {
				t.Errorf("open sources: Lookup(%q).Name = %q", name, src.Name)
			}
			if kind := src.Verifier.Kind(); kind != verify.KindNone {
				t.Errorf("open sources: Lookup(%q) has kind %q, want none", name, kind)
			}
			if err := src.Verifier.Verify(verify.Request{Body: []byte("{}")}, time.Now()); err != nil {
				t.Errorf("open sources: Lookup(%q) rejected an unsigned request: %v", name, err)
			}
		}
		for _, name := range []string{"", "GitHub", "a b", "a.b", "a/b", strings.Repeat("z", 65)} {
			if src := sources.Lookup(name); src != nil {
				t.Errorf("open sources: Lookup(%q) = %+v, want nil for an invalid name", name, src)
			}
		}
	}
}

func TestLoadSourcesValidConfig(t *testing.T) {
	t.Parallel()
	standardSecret := srcStandardSecret("standard-key-for-tests")
	env := map[string]string{
		"HOOKBUS_SOURCE_GITHUB_SECRETS":    "github-secret",
		"HOOKBUS_SOURCE_BILLING_SECRETS":   "whsec_billing_secret",
		"HOOKBUS_SOURCE_BILLING_TOLERANCE": "10m",
		"HOOKBUS_SOURCE_CHAT_SECRETS":      "slack-signing-secret",
		"HOOKBUS_SOURCE_SHOP_SECRETS":      "shopify-secret",
		"HOOKBUS_SOURCE_MY_APP_SECRETS":    standardSecret,
		"HOOKBUS_SOURCE_GENERIC_SECRETS":   " generic-secret ",
		"HOOKBUS_SOURCE_GENERIC_HEADER":    "X-Signature",
		"HOOKBUS_SOURCE_GENERIC_ALGORITHM": "sha1",
		"HOOKBUS_SOURCE_GENERIC_ENCODING":  "base64",
		"HOOKBUS_SOURCE_GENERIC_PREFIX":    "sha1=",
	}
	cfg := service.Config{Sources: " github:github , billing:stripe,chat:slack,shop:shopify,my-app:standard,generic:hmac,public:none"}

	sources, err := service.LoadSources(cfg, srcLookup(env))
	if err != nil {
		t.Fatalf("LoadSources: %v", err)
	}
	if sources.Open() {
		t.Error("Open() = true for a configured source list")
	}
	names := sources.Names()
	slices.Sort(names)
	wantNames := []string{"billing", "chat", "generic", "github", "my-app", "public", "shop"}
	if !slices.Equal(names, wantNames) {
		t.Errorf("Names() = %v, want %v", names, wantNames)
	}
	if unverified := sources.Unverified(); !slices.Equal(unverified, []string{"public"}) {
		t.Errorf("Unverified() = %v, want [public]", unverified)
	}
	for _, name := range []string{"gitlab", "", "GitHub", "github "} {
		if src := sources.Lookup(name); src != nil {
			t.Errorf("Lookup(%q) = %+v, want nil for a source that is not configured", name, src)
		}
	}

	now := time.Now()
	genericOpts := verify.Options{Header: "X-Signature", Algorithm: "sha1", Encoding: "base64", Prefix: "sha1="}
	tests := []struct {
		name   string
		kind   string
		secret string
		opts   verify.Options
	}{
		{name: "github", kind: verify.KindGitHub, secret: "github-secret"},
		{name: "billing", kind: verify.KindStripe, secret: "whsec_billing_secret"},
		{name: "chat", kind: verify.KindSlack, secret: "slack-signing-secret"},
		{name: "shop", kind: verify.KindShopify, secret: "shopify-secret"},
		{name: "my-app", kind: verify.KindStandard, secret: standardSecret},
		{name: "generic", kind: verify.KindHMAC, secret: "generic-secret", opts: genericOpts},
	}
	for _, tt := range tests {
		src := sources.Lookup(tt.name)
		if src == nil {
			t.Errorf("Lookup(%q) = nil, want the configured source", tt.name)
			continue
		}
		if src.Name != tt.name {
			t.Errorf("Lookup(%q).Name = %q", tt.name, src.Name)
		}
		if kind := src.Verifier.Kind(); kind != tt.kind {
			t.Errorf("Lookup(%q) has kind %q, want %q", tt.name, kind, tt.kind)
			continue
		}
		srcCheckSigned(t, src, tt.secret, tt.opts, now, now)
		wrong := "wrong-secret"
		if tt.kind == verify.KindStandard {
			wrong = srcStandardSecret("another-key")
		}
		srcCheckRejected(t, src, wrong, tt.opts, now, now, verify.ErrMismatch)
	}

	// The hmac options are applied: the default sha256 hex form of the same
	// header and secret does not verify.
	if generic := sources.Lookup("generic"); generic != nil {
		srcCheckRejected(t, generic, "generic-secret", verify.Options{Header: "X-Signature"}, now, now, verify.ErrMalformedHeader)
	}

	// billing has a tolerance of 10 minutes, chat the default of 5.
	eightMinutesAgo := now.Add(-8 * time.Minute)
	if billing := sources.Lookup("billing"); billing != nil {
		srcCheckSigned(t, billing, "whsec_billing_secret", verify.Options{}, eightMinutesAgo, now)
	}
	if chat := sources.Lookup("chat"); chat != nil {
		srcCheckRejected(t, chat, "slack-signing-secret", verify.Options{}, eightMinutesAgo, now, verify.ErrStaleTimestamp)
	}

	if public := sources.Lookup("public"); public == nil {
		t.Error(`Lookup("public") = nil, want the source of kind none`)
	} else if err := public.Verifier.Verify(verify.Request{Body: []byte("{}")}, now); err != nil {
		t.Errorf("source of kind none rejected an unsigned request: %v", err)
	}
}

func TestLoadSourcesSecrets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		sources  string
		env      map[string]string
		files    map[string]string // secret files, or nil for no HOOKBUS_SECRETS_DIR
		source   string
		accepted []string
		rejected []string
	}{
		{
			name:     "env separated by white space",
			sources:  "gh:github",
			env:      map[string]string{"HOOKBUS_SOURCE_GH_SECRETS": " old-secret  new-secret\tthird-secret\nfourth-secret "},
			source:   "gh",
			accepted: []string{"old-secret", "new-secret", "third-secret", "fourth-secret"},
			rejected: []string{"old-secret new-secret", "other-secret"},
		},
		{
			name:     "file with one secret per line",
			sources:  "gh:github",
			files:    map[string]string{"gh": "old-secret\nnew-secret\n"},
			source:   "gh",
			accepted: []string{"old-secret", "new-secret"},
			rejected: []string{"old-secret\nnew-secret", "other-secret"},
		},
		{
			name:     "file with CRLF, blank lines and spaces",
			sources:  "gh:github",
			files:    map[string]string{"gh": "\r\n  old-secret \r\n\r\n\tnew-secret\r\n"},
			source:   "gh",
			accepted: []string{"old-secret", "new-secret"},
			rejected: []string{" old-secret ", "old-secret\r", "other-secret"},
		},
		{
			name:     "file without final newline",
			sources:  "gh:github",
			files:    map[string]string{"gh": "only-secret"},
			source:   "gh",
			accepted: []string{"only-secret"},
			rejected: []string{"other-secret"},
		},
		{
			name:     "env and file combined",
			sources:  "my-app:github",
			env:      map[string]string{"HOOKBUS_SOURCE_MY_APP_SECRETS": "env-secret"},
			files:    map[string]string{"my-app": "file-secret-old\nfile-secret-new\n"},
			source:   "my-app",
			accepted: []string{"env-secret", "file-secret-old", "file-secret-new"},
			rejected: []string{"other-secret"},
		},
		{
			name:     "secrets dir without a file for the source",
			sources:  "gh:github,shop:shopify",
			env:      map[string]string{"HOOKBUS_SOURCE_GH_SECRETS": "env-secret"},
			files:    map[string]string{"shop": "shop-secret\n"},
			source:   "gh",
			accepted: []string{"env-secret"},
			rejected: []string{"shop-secret"},
		},
		{
			name:     "file named after the source, not its variable",
			sources:  "gh:github,shop:shopify",
			env:      map[string]string{"HOOKBUS_SOURCE_GH_SECRETS": "env-secret"},
			files:    map[string]string{"shop": "shop-secret\n", "SHOP": "upper-case-secret\n"},
			source:   "shop",
			accepted: []string{"shop-secret"},
			rejected: []string{"upper-case-secret", "env-secret"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := service.Config{Sources: tt.sources}
			if tt.files != nil {
				cfg.SecretsDir = srcSecretsDir(t, tt.files)
			}
			sources, err := service.LoadSources(cfg, srcLookup(tt.env))
			if err != nil {
				t.Fatalf("LoadSources: %v", err)
			}
			src := sources.Lookup(tt.source)
			if src == nil {
				t.Fatalf("Lookup(%q) = nil", tt.source)
			}
			now := time.Now()
			for _, secret := range tt.accepted {
				srcCheckSigned(t, src, secret, verify.Options{}, now, now)
			}
			for _, secret := range tt.rejected {
				srcCheckRejected(t, src, secret, verify.Options{}, now, now, verify.ErrMismatch)
			}
		})
	}
}

func TestLoadSourcesErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		sources string
		env     map[string]string
		files   map[string]string // secret files, or nil for no HOOKBUS_SECRETS_DIR
		dirs    []string          // directories inside HOOKBUS_SECRETS_DIR
		// want lists, for each problem in order, text that its line of
		// the error must contain.
		want [][]string
		// secrets lists values that must not appear in the error.
		secrets []string
	}{
		{
			name:    "unknown kind",
			sources: "repo:gitlab",
			env:     map[string]string{"HOOKBUS_SOURCE_REPO_SECRETS": "unknown-kind-secret"},
			want:    [][]string{{"HOOKBUS_SOURCES", `"repo"`, `"gitlab"`, "github"}},
			secrets: []string{"unknown-kind-secret"},
		},
		{
			name:    "missing secret",
			sources: "gh:github",
			want:    [][]string{{"HOOKBUS_SOURCE_GH_SECRETS", `"gh"`}},
		},
		{
			name:    "secret of white space only",
			sources: "gh:github",
			env:     map[string]string{"HOOKBUS_SOURCE_GH_SECRETS": " \t\n"},
			want:    [][]string{{"HOOKBUS_SOURCE_GH_SECRETS", `"gh"`}},
		},
		{
			name:    "missing secret with secrets dir",
			sources: "gh:github",
			files:   map[string]string{"gh": "\n\n"},
			want:    [][]string{{"HOOKBUS_SOURCE_GH_SECRETS", "HOOKBUS_SECRETS_DIR", `"gh"`}},
		},
		{
			name:    "duplicate name",
			sources: "pay:stripe,pay:stripe",
			env:     map[string]string{"HOOKBUS_SOURCE_PAY_SECRETS": "duplicate-secret"},
			want:    [][]string{{"HOOKBUS_SOURCES", `"pay"`, "twice"}},
			secrets: []string{"duplicate-secret"},
		},
		{
			name:    "upper case name",
			sources: "GitHub:github",
			env:     map[string]string{"HOOKBUS_SOURCE_GITHUB_SECRETS": "upper-case-secret"},
			want:    [][]string{{"HOOKBUS_SOURCES", `"GitHub"`}},
			secrets: []string{"upper-case-secret"},
		},
		{
			name:    "name with a dot",
			sources: "git.hub:github",
			want:    [][]string{{"HOOKBUS_SOURCES", `"git.hub"`}},
		},
		{
			name:    "name too long",
			sources: strings.Repeat("a", 65) + ":github",
			want:    [][]string{{"HOOKBUS_SOURCES", strings.Repeat("a", 65)}},
		},
		{
			name:    "entry without colon",
			sources: "github",
			env:     map[string]string{"HOOKBUS_SOURCE_GITHUB_SECRETS": "no-colon-secret"},
			want:    [][]string{{"HOOKBUS_SOURCES", `"github"`, "name:kind"}},
			secrets: []string{"no-colon-secret"},
		},
		{
			name:    "entry without kind",
			sources: "github:",
			want:    [][]string{{"HOOKBUS_SOURCES", `"github:"`, "name:kind"}},
		},
		{
			name:    "entry without name",
			sources: ":github",
			want:    [][]string{{"HOOKBUS_SOURCES", `":github"`, "name:kind"}},
		},
		{
			name:    "names share variables",
			sources: "a-b:github,a_b:github",
			env:     map[string]string{"HOOKBUS_SOURCE_A_B_SECRETS": "shared-secret"},
			want:    [][]string{{"HOOKBUS_SOURCES", "HOOKBUS_SOURCE_A_B", `"a-b"`, `"a_b"`}},
			secrets: []string{"shared-secret"},
		},
		{
			name:    "tolerance not a duration",
			sources: "pay:stripe",
			env:     map[string]string{"HOOKBUS_SOURCE_PAY_SECRETS": "tolerance-secret", "HOOKBUS_SOURCE_PAY_TOLERANCE": "5 minutes"},
			want:    [][]string{{"HOOKBUS_SOURCE_PAY_TOLERANCE", `"5 minutes"`}},
			secrets: []string{"tolerance-secret"},
		},
		{
			name:    "negative tolerance",
			sources: "pay:stripe",
			env:     map[string]string{"HOOKBUS_SOURCE_PAY_SECRETS": "tolerance-secret", "HOOKBUS_SOURCE_PAY_TOLERANCE": "-5m"},
			want:    [][]string{{"HOOKBUS_SOURCE_PAY_TOLERANCE", `"-5m"`}},
			secrets: []string{"tolerance-secret"},
		},
		{
			name:    "zero tolerance",
			sources: "pay:stripe",
			env:     map[string]string{"HOOKBUS_SOURCE_PAY_SECRETS": "tolerance-secret", "HOOKBUS_SOURCE_PAY_TOLERANCE": "0s"},
			want:    [][]string{{"HOOKBUS_SOURCE_PAY_TOLERANCE", `"0s"`}},
			secrets: []string{"tolerance-secret"},
		},
		{
			name:    "hmac without header",
			sources: "generic:hmac",
			env:     map[string]string{"HOOKBUS_SOURCE_GENERIC_SECRETS": "hmac-secret"},
			want:    [][]string{{"HOOKBUS_SOURCE_GENERIC_HEADER", `"generic"`}},
			secrets: []string{"hmac-secret"},
		},
		{
			name:    "hmac without header or secret",
			sources: "generic:hmac",
			want: [][]string{
				{"HOOKBUS_SOURCE_GENERIC_HEADER", `"generic"`},
				{"HOOKBUS_SOURCE_GENERIC_SECRETS", `"generic"`},
			},
		},
		{
			name:    "bad tolerance and missing secret",
			sources: "pay:stripe",
			env:     map[string]string{"HOOKBUS_SOURCE_PAY_TOLERANCE": "soon"},
			want: [][]string{
				{"HOOKBUS_SOURCE_PAY_TOLERANCE", `"soon"`},
				{"HOOKBUS_SOURCE_PAY_SECRETS", `"pay"`},
			},
		},
		{
			name:    "hmac with unsupported algorithm",
			sources: "generic:hmac",
			env: map[string]string{
				"HOOKBUS_SOURCE_GENERIC_SECRETS":   "hmac-secret",
				"HOOKBUS_SOURCE_GENERIC_HEADER":    "X-Signature",
				"HOOKBUS_SOURCE_GENERIC_ALGORITHM": "md5",
			},
			want:    [][]string{{"HOOKBUS_SOURCE_GENERIC_", `"generic"`, `"md5"`}},
			secrets: []string{"hmac-secret"},
		},
		{
			name:    "hmac header option on another kind",
			sources: "gh:github",
			env: map[string]string{
				"HOOKBUS_SOURCE_GH_SECRETS": "github-secret",
				"HOOKBUS_SOURCE_GH_HEADER":  "X-Signature",
			},
			want:    [][]string{{"HOOKBUS_SOURCE_GH_", `"gh"`, "hmac"}},
			secrets: []string{"github-secret"},
		},
		{
			name:    "standard secret not base64",
			sources: "std:standard",
			env:     map[string]string{"HOOKBUS_SOURCE_STD_SECRETS": "whsec_not*base64*secret"},
			want:    [][]string{{"HOOKBUS_SOURCE_STD_", `"std"`, "base64"}},
			secrets: []string{"whsec_not*base64*secret", "not*base64*secret"},
		},
		{
			name:    "secret for kind none",
			sources: "public:none",
			env:     map[string]string{"HOOKBUS_SOURCE_PUBLIC_SECRETS": "unused-secret"},
			want:    [][]string{{"HOOKBUS_SOURCE_PUBLIC_", `"public"`}},
			secrets: []string{"unused-secret"},
		},
		{
			name:    "unreadable secret file",
			sources: "gh:github",
			env:     map[string]string{"HOOKBUS_SOURCE_GH_SECRETS": "env-secret"},
			files:   map[string]string{},
			dirs:    []string{"gh"},
			want:    [][]string{{"HOOKBUS_SECRETS_DIR", `"gh"`}},
			secrets: []string{"env-secret"},
		},
		{
			name: "every problem at once",
			sources: "repo:gitlab, gh:github, GitHub:github, nocolon, a-b:github, a_b:github," +
				"pay:stripe, pay:stripe, slow:stripe, generic:hmac, ok:shopify",
			env: map[string]string{
				"HOOKBUS_SOURCE_REPO_SECRETS":    "combined-secret-1",
				"HOOKBUS_SOURCE_A_B_SECRETS":     "combined-secret-2",
				"HOOKBUS_SOURCE_PAY_SECRETS":     "combined-secret-3",
				"HOOKBUS_SOURCE_SLOW_SECRETS":    "combined-secret-4",
				"HOOKBUS_SOURCE_SLOW_TOLERANCE":  "forever",
				"HOOKBUS_SOURCE_GENERIC_SECRETS": "combined-secret-5",
				"HOOKBUS_SOURCE_OK_SECRETS":      "combined-secret-6",
			},
			want: [][]string{
				{"HOOKBUS_SOURCES", `"gitlab"`},
				{"HOOKBUS_SOURCE_GH_SECRETS"},
				{"HOOKBUS_SOURCES", `"GitHub"`},
				{"HOOKBUS_SOURCES", `"nocolon"`},
				{"HOOKBUS_SOURCES", `"a-b"`, `"a_b"`},
				{"HOOKBUS_SOURCES", `"pay"`, "twice"},
				{"HOOKBUS_SOURCE_SLOW_TOLERANCE", `"forever"`},
				{"HOOKBUS_SOURCE_GENERIC_HEADER"},
			},
			secrets: []string{
				"combined-secret-1", "combined-secret-2", "combined-secret-3",
				"combined-secret-4", "combined-secret-5", "combined-secret-6",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := service.Config{Sources: tt.sources}
			if tt.files != nil {
				cfg.SecretsDir = srcSecretsDir(t, tt.files)
				for _, dir := range tt.dirs {
					if err := os.Mkdir(filepath.Join(cfg.SecretsDir, dir), 0o700); err != nil {
						t.Fatalf("create directory: %v", err)
					}
				}
			}

			sources, err := service.LoadSources(cfg, srcLookup(tt.env))
			if err == nil {
				t.Fatalf("LoadSources(%q) returned no error", tt.sources)
			}
			if sources != nil {
				t.Errorf("LoadSources returned sources %+v next to the error", sources)
			}
			srcCheckProblems(t, err, tt.want)
			for _, secret := range tt.secrets {
				if strings.Contains(err.Error(), secret) {
					t.Errorf("error contains the secret %q:\n%v", secret, err)
				}
			}
		})
	}
}

// srcCheckProblems fails unless err has one line per problem, in order,
// and each line contains every text listed for its problem.
func srcCheckProblems(t *testing.T, err error, want [][]string) {
	t.Helper()
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("error has %d lines, want %d (one per problem):\n%v", len(lines), len(want), err)
	}
	for i, parts := range want {
		if i >= len(lines) {
			t.Errorf("problem %d missing, want a line containing %q", i+1, parts)
			continue
		}
		for _, part := range parts {
			if !strings.Contains(lines[i], part) {
				t.Errorf("problem %d %q does not contain %q", i+1, lines[i], part)
			}
		}
	}
}

// srcValidConfig returns a Config that passes Validate, with sources.
func srcValidConfig(sources string, env map[string]string) service.Config {
	return service.Config{
		Broker:          config.Broker{AMQPURL: "amqp://guest:guest@127.0.0.1:5672/", Namespace: "sources-test"},
		Log:             config.Log{LogLevel: "info", LogFormat: "json"},
		Addr:            "127.0.0.1:0",
		MaxBodyBytes:    1 << 20,
		PublishTimeout:  5 * time.Second,
		PublishChannels: 4,
		ReadTimeout:     10 * time.Second,
		ShutdownGrace:   10 * time.Second,
		Sources:         sources,
		LookupEnv:       srcLookup(env),
	}
}

func TestConfigValidateIncludesSources(t *testing.T) {
	t.Parallel()
	env := map[string]string{"HOOKBUS_SOURCE_GH_SECRETS": "validate-secret"}
	if err := srcValidConfig("gh:github", env).Validate(); err != nil {
		t.Fatalf("Validate of a valid config: %v", err)
	}

	cfg := srcValidConfig("gh:github,pay:stripe,broken", env)
	cfg.MaxBodyBytes = 0
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate returned no error for a source without a secret, an invalid entry and MaxBodyBytes 0")
	}
	for _, want := range []string{"HOOKBUS_MAX_BODY_BYTES", "HOOKBUS_SOURCE_PAY_SECRETS", `"broken"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error does not contain %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), "validate-secret") {
		t.Errorf("Validate error contains the secret:\n%v", err)
	}

	svc, err := service.New(cfg, nil)
	if err == nil {
		t.Fatalf("service.New accepted an invalid source list and listens on %s", svc.Addr())
	}
	if !strings.Contains(err.Error(), "HOOKBUS_SOURCE_PAY_SECRETS") {
		t.Errorf("service.New error does not name HOOKBUS_SOURCE_PAY_SECRETS:\n%v", err)
	}
}
