package send_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/hookbus/hookbus/ingest/send"
	"github.com/hookbus/hookbus/ingest/verify"
)

// fixtureDir contains real provider request bodies.
var fixtureDir = filepath.Join("..", "testdata", "webhooks")

// request is what the test server received.
type request struct {
	method string
	path   string
	header http.Header
	body   []byte
	// verifyErr is the verifier's result for this request.
	verifyErr error
}

// receiver is a test ingest. It checks each request with a verifier and
// responds 202 when the signature is valid and 401 otherwise.
type receiver struct {
	server *httptest.Server

	mu       sync.Mutex
	requests []request
}

// newReceiver starts a receiver that verifies with the given kind, secret
// and options, and stops it when the test ends.
func newReceiver(t *testing.T, kind, secret string, opts verify.Options) *receiver {
	t.Helper()
	var secrets [][]byte
	if kind != verify.KindNone {
		secrets = [][]byte{[]byte(secret)}
	}
	verifier, err := verify.New(kind, secrets, opts)
	if err != nil {
		t.Fatalf("verify.New: %v", err)
	}
	r := &receiver{}
	r.server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			http.Error(w, "read body", http.StatusBadRequest)
			return
		}
		verifyErr := verifier.Verify(verify.Request{Header: req.Header, Body: body}, time.Now())
		r.mu.Lock()
		r.requests = append(r.requests, request{
			method: req.Method, path: req.URL.Path, header: req.Header.Clone(), body: body, verifyErr: verifyErr,
		})
		r.mu.Unlock()

		w.Header().Set("Content-Type", "application/json")
		if verifyErr != nil {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = io.WriteString(w, `{"error":"invalid signature"}`)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		_, _ = io.WriteString(w, `{"id":"accepted-by-test"}`)
	}))
	t.Cleanup(r.server.Close)
	return r
}

// received returns the requests so far.
func (r *receiver) received() []request {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]request(nil), r.requests...)
}

// run calls send.Run and returns its exit status and output.
func run(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code = send.Run(context.Background(), args, &out, &errOut)
	return code, out.String(), errOut.String()
}

// writeSecretFile writes content to a new file and returns its path.
func writeSecretFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatalf("write secret file: %v", err)
	}
	return path
}

// checkNoSecret fails when secret appears in the output.
func checkNoSecret(t *testing.T, secret, stdout, stderr string) {
	t.Helper()
	if strings.Contains(stdout, secret) {
		t.Errorf("stdout contains the secret:\n%s", stdout)
	}
	if strings.Contains(stderr, secret) {
		t.Errorf("stderr contains the secret:\n%s", stderr)
	}
}

func readBody(t *testing.T, file string) []byte {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(fixtureDir, filepath.FromSlash(file)))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	return body
}

func TestRunSignsForEveryKind(t *testing.T) {
	t.Parallel()
	standardSecret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("send-test-standard-key"))
	hmacOpts := verify.Options{Header: "X-Signature", Algorithm: "sha512", Encoding: "base64", Prefix: "sha512="}

	tests := []struct {
		name   string
		kind   string
		secret string
		opts   verify.Options // receiver options
		source string
		file   string
		args   []string // flags other than -url, -source and the secret
		// wantHeader lists headers that must arrive with these values.
		wantHeader map[string]string
		// wantValues lists headers that must arrive with several values.
		wantValues map[string][]string
		// wantUUID names a header that must carry a generated UUID.
		wantUUID string
	}{
		{
			name: "github with event and id", kind: verify.KindGitHub, secret: "send-github-secret",
			source: "github", file: "github/push.json",
			args: []string{"-event", "push", "-id", "delivery-0001"},
			wantHeader: map[string]string{
				"X-GitHub-Event": "push", "X-GitHub-Delivery": "delivery-0001", "Content-Type": "application/json",
			},
		},
		{
			name: "github kind from a custom source", kind: verify.KindGitHub, secret: "send-github-secret",
			source: "repos", file: "github/ping.json",
			args:       []string{"-kind", "github", "-event", "ping"},
			wantHeader: map[string]string{"X-GitHub-Event": "ping"},
			wantUUID:   "X-GitHub-Delivery",
		},
		{
			name: "stripe", kind: verify.KindStripe, secret: "whsec_send_stripe_secret",
			source: "stripe", file: "stripe/invoice.paid.json",
			wantHeader: map[string]string{"Content-Type": "application/json"},
		},
		{
			name: "slack form", kind: verify.KindSlack, secret: "send-slack-secret",
			source: "slack", file: "slack/block_actions.form",
			wantHeader: map[string]string{"Content-Type": "application/x-www-form-urlencoded"},
		},
		{
			name: "slack with extra headers", kind: verify.KindSlack, secret: "send-slack-secret",
			source: "chat", file: "slack/event_callback.app_mention.json",
			args: []string{"-kind", "slack", "-header", "X-Slack-Retry-Num: 1", "-header", "X-Slack-Retry-Reason:http_timeout"},
			wantHeader: map[string]string{
				"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout", "Content-Type": "application/json",
			},
		},
		{
			name: "extra header replaces a generated one", kind: verify.KindGitHub, secret: "send-github-secret",
			source: "github", file: "github/push.json",
			args: []string{
				"-event", "push", "-header", "Content-Type: application/json; charset=utf-8",
				"-header", "X-GitHub-Event: ping", "-header", "X-Custom: one", "-header", "X-Custom: two",
			},
			wantHeader: map[string]string{"Content-Type": "application/json; charset=utf-8", "X-GitHub-Event": "ping"},
			wantValues: map[string][]string{"X-Custom": {"one", "two"}},
		},
		{
			name: "shopify with topic and id", kind: verify.KindShopify, secret: "send-shopify-secret",
			source: "shop", file: "shopify/orders.create.json",
			args: []string{"-kind", "shopify", "-event", "orders/create", "-id", "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043"},
			wantHeader: map[string]string{
				"X-Shopify-Topic": "orders/create", "X-Shopify-Webhook-Id": "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
			},
		},
		{
			name: "standard with id", kind: verify.KindStandard, secret: standardSecret,
			source: "events", file: "stripe/customer.updated.json",
			args:       []string{"-kind", "standard", "-id", "msg_send_test_1"},
			wantHeader: map[string]string{"Webhook-Id": "msg_send_test_1"},
		},
		{
			name: "hmac with options", kind: verify.KindHMAC, secret: "send-hmac-secret", opts: hmacOpts,
			source: "generic", file: "stripe/customer.updated.json",
			args: []string{
				"-kind", "hmac", "-hmac-header", "x-signature", "-hmac-algorithm", "sha512",
				"-hmac-encoding", "base64", "-hmac-prefix", "sha512=", "-content-type", "application/vnd.test+json",
			},
			wantHeader: map[string]string{"Content-Type": "application/vnd.test+json"},
		},
		{
			name: "none without secret", kind: verify.KindNone,
			source: "open", file: "github/push.json",
			wantHeader: map[string]string{"Content-Type": "application/json"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			recv := newReceiver(t, tt.kind, tt.secret, tt.opts)
			args := []string{"-url", recv.server.URL + "/", "-source", tt.source}
			if tt.secret != "" {
				args = append(args, "-secret-file", writeSecretFile(t, tt.secret+"\n"))
			}
			args = append(args, tt.args...)
			args = append(args, filepath.Join(fixtureDir, filepath.FromSlash(tt.file)))

			code, stdout, stderr := run(t, args...)
			if code != send.ExitOK {
				t.Errorf("exit status %d, want %d; stdout %q, stderr %q", code, send.ExitOK, stdout, stderr)
			}
			if !strings.Contains(stdout, "202 Accepted") || !strings.Contains(stdout, "accepted-by-test") {
				t.Errorf("stdout %q does not show the 202 response and its body", stdout)
			}
			if tt.secret != "" {
				checkNoSecret(t, tt.secret, stdout, stderr)
			}

			got := recv.received()
			if len(got) != 1 {
				t.Fatalf("receiver got %d requests, want 1", len(got))
			}
			req := got[0]
			if req.verifyErr != nil {
				t.Errorf("signature did not verify as %s: %v", tt.kind, req.verifyErr)
			}
			if req.method != http.MethodPost {
				t.Errorf("method %s, want POST", req.method)
			}
			if want := "/webhooks/" + tt.source; req.path != want {
				t.Errorf("path %q, want %q", req.path, want)
			}
			if !bytes.Equal(req.body, readBody(t, tt.file)) {
				t.Errorf("body of %d bytes differs from the file", len(req.body))
			}
			for name, want := range tt.wantHeader {
				if values := req.header.Values(name); len(values) != 1 || values[0] != want {
					t.Errorf("header %s = %q, want exactly %q", name, values, want)
				}
			}
			for name, want := range tt.wantValues {
				if values := req.header.Values(name); strings.Join(values, "\x00") != strings.Join(want, "\x00") {
					t.Errorf("header %s = %q, want %q", name, values, want)
				}
			}
			if tt.wantUUID != "" {
				if _, err := uuid.Parse(req.header.Get(tt.wantUUID)); err != nil {
					t.Errorf("header %s = %q, want a generated UUID: %v", tt.wantUUID, req.header.Get(tt.wantUUID), err)
				}
			}
			if tt.kind == verify.KindNone {
				for _, name := range []string{"X-Hub-Signature-256", "Stripe-Signature", "X-Slack-Signature", "Webhook-Signature"} {
					if value := req.header.Get(name); value != "" {
						t.Errorf("kind none sent the signature header %s: %q", name, value)
					}
				}
			}
		})
	}
}

func TestRunStandardGeneratesID(t *testing.T) {
	t.Parallel()
	secret := "whsec_" + base64.StdEncoding.EncodeToString([]byte("send-test-standard-key"))
	recv := newReceiver(t, verify.KindStandard, secret, verify.Options{})

	for range 2 {
		code, stdout, stderr := run(t, "-url", recv.server.URL, "-source", "events", "-kind", "standard",
			"-secret", secret, filepath.Join(fixtureDir, "stripe", "customer.updated.json"))
		if code != send.ExitOK {
			t.Fatalf("exit status %d, want 0; stdout %q, stderr %q", code, stdout, stderr)
		}
		checkNoSecret(t, secret, stdout, stderr)
	}

	got := recv.received()
	if len(got) != 2 {
		t.Fatalf("receiver got %d requests, want 2", len(got))
	}
	for i, req := range got {
		if req.verifyErr != nil {
			t.Errorf("request %d did not verify: %v", i+1, req.verifyErr)
		}
		if id := req.header.Get("Webhook-Id"); !strings.HasPrefix(id, "msg_") || len(id) <= len("msg_") {
			t.Errorf("request %d: Webhook-Id %q, want a generated msg_ id", i+1, id)
		}
	}
	if got[0].header.Get("Webhook-Id") == got[1].header.Get("Webhook-Id") {
		t.Errorf("two sends used the same Webhook-Id %q", got[0].header.Get("Webhook-Id"))
	}
}

// TestRunSecretFromEnv uses t.Setenv and so cannot run in parallel.
func TestRunSecretFromEnv(t *testing.T) {
	const secret = "whsec_send_env_secret"
	t.Setenv("SEND_TEST_STRIPE_SECRET", secret)
	recv := newReceiver(t, verify.KindStripe, secret, verify.Options{})

	code, stdout, stderr := run(t, "-url", recv.server.URL, "-source", "billing", "-kind", "stripe",
		"-secret-env", "SEND_TEST_STRIPE_SECRET", filepath.Join(fixtureDir, "stripe", "invoice.paid.json"))
	if code != send.ExitOK {
		t.Fatalf("exit status %d, want 0; stdout %q, stderr %q", code, stdout, stderr)
	}
	checkNoSecret(t, secret, stdout, stderr)
	got := recv.received()
	if len(got) != 1 {
		t.Fatalf("receiver got %d requests, want 1", len(got))
	}
	if got[0].verifyErr != nil {
		t.Errorf("signature did not verify: %v", got[0].verifyErr)
	}
}

func TestRunFailedRequest(t *testing.T) {
	t.Parallel()
	const secret = "send-secret-the-receiver-does-not-know"
	file := filepath.Join(fixtureDir, "github", "push.json")

	t.Run("401 for a wrong secret", func(t *testing.T) {
		t.Parallel()
		recv := newReceiver(t, verify.KindGitHub, "receiver-secret", verify.Options{})
		code, stdout, stderr := run(t, "-url", recv.server.URL, "-source", "github", "-secret", secret, file)
		if code != send.ExitFailed {
			t.Errorf("exit status %d, want %d; stdout %q, stderr %q", code, send.ExitFailed, stdout, stderr)
		}
		if !strings.Contains(stdout, "401 Unauthorized") || !strings.Contains(stdout, "invalid signature") {
			t.Errorf("stdout %q does not show the 401 response and its body", stdout)
		}
		checkNoSecret(t, secret, stdout, stderr)
		if got := recv.received(); len(got) != 1 {
			t.Errorf("receiver got %d requests, want 1", len(got))
		}
	})

	t.Run("401 for an overridden signature", func(t *testing.T) {
		t.Parallel()
		recv := newReceiver(t, verify.KindGitHub, secret, verify.Options{})
		forged := "X-Hub-Signature-256: sha256=" + strings.Repeat("0", 64)
		code, stdout, stderr := run(t, "-url", recv.server.URL, "-source", "github", "-secret", secret, "-header", forged, file)
		if code != send.ExitFailed {
			t.Errorf("exit status %d, want %d; stdout %q, stderr %q", code, send.ExitFailed, stdout, stderr)
		}
		got := recv.received()
		if len(got) != 1 {
			t.Fatalf("receiver got %d requests, want 1", len(got))
		}
		if values := got[0].header.Values("X-Hub-Signature-256"); len(values) != 1 {
			t.Errorf("X-Hub-Signature-256 = %q, want only the value of -header", values)
		}
		checkNoSecret(t, secret, stdout, stderr)
	})

	t.Run("503 from the ingest", func(t *testing.T) {
		t.Parallel()
		server := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, `{"error":"broker unavailable"}`, http.StatusServiceUnavailable)
		}))
		t.Cleanup(server.Close)
		code, stdout, stderr := run(t, "-url", server.URL, "-source", "github", "-secret", secret, file)
		if code != send.ExitFailed {
			t.Errorf("exit status %d, want %d; stdout %q, stderr %q", code, send.ExitFailed, stdout, stderr)
		}
		if !strings.Contains(stdout, "503") {
			t.Errorf("stdout %q does not show the 503 response", stdout)
		}
		checkNoSecret(t, secret, stdout, stderr)
	})

	t.Run("connection refused", func(t *testing.T) {
		t.Parallel()
		server := httptest.NewServer(http.NotFoundHandler())
		closedURL := server.URL
		server.Close()
		code, stdout, stderr := run(t, "-url", closedURL, "-source", "github", "-secret", secret, file)
		if code != send.ExitFailed {
			t.Errorf("exit status %d, want %d; stdout %q, stderr %q", code, send.ExitFailed, stdout, stderr)
		}
		if stderr == "" {
			t.Error("stderr is empty, want the connection error")
		}
		checkNoSecret(t, secret, stdout, stderr)
	})
}

func TestRunUsageErrors(t *testing.T) {
	t.Parallel()
	const secret = "send-usage-secret-value"
	recv := newReceiver(t, verify.KindNone, "", verify.Options{})
	file := filepath.Join(fixtureDir, "github", "push.json")
	secretFile := writeSecretFile(t, secret+"\n")
	emptySecretFile := writeSecretFile(t, "\n")

	tests := []struct {
		name string
		args []string
		// wantStderr is text that stderr must contain.
		wantStderr string
	}{
		{"missing source", []string{"-secret", secret, file}, "usage: ingest send"},
		{"empty source", []string{"-source", "", "-secret", secret, file}, "usage: ingest send"},
		{"missing file argument", []string{"-source", "github", "-secret", secret}, "usage: ingest send"},
		{"two file arguments", []string{"-source", "github", "-secret", secret, file, file}, "usage: ingest send"},
		{"secret and secret file", []string{"-source", "github", "-secret", secret, "-secret-file", secretFile, file}, "only one of"},
		{"secret file and secret env", []string{"-source", "github", "-secret-file", secretFile, "-secret-env", "HOME", file}, "only one of"},
		{"unknown kind", []string{"-source", "repo", "-kind", "gitlab", "-secret", secret, file}, `"gitlab"`},
		{"kind without secret", []string{"-source", "github", file}, "needs a secret"},
		{"empty secret file", []string{"-source", "github", "-secret-file", emptySecretFile, file}, "needs a secret"},
		{"unset secret env", []string{"-source", "github", "-secret-env", "SEND_TEST_VARIABLE_THAT_IS_NOT_SET", file}, "SEND_TEST_VARIABLE_THAT_IS_NOT_SET"},
		{"missing secret file", []string{"-source", "github", "-secret-file", filepath.Join(t.TempDir(), "absent"), file}, "absent"},
		{"missing body file", []string{"-source", "github", "-secret", secret, filepath.Join(t.TempDir(), "absent.json")}, "absent.json"},
		{"hmac without header", []string{"-source", "generic", "-kind", "hmac", "-secret", secret, file}, "Header"},
		{"hmac option on another kind", []string{"-source", "github", "-hmac-header", "X-Signature", "-secret", secret, file}, "hmac"},
		{"invalid standard secret", []string{"-source", "events", "-kind", "standard", "-secret", "whsec_" + secret, file}, "base64"},
		{"invalid extra header", []string{"-source", "github", "-secret", secret, "-header", "X-No-Colon", file}, `"X-No-Colon"`},
		{"extra header without name", []string{"-source", "github", "-secret", secret, "-header", ": value", file}, `": value"`},
		{"undefined flag", []string{"-source", "github", "-secret", secret, "-verbose", file}, "-verbose"},
		{"invalid timeout", []string{"-source", "github", "-secret", secret, "-timeout", "soon", file}, "-timeout"},
	}
	// The cleanup runs after the parallel subtests have finished.
	t.Cleanup(func() {
		if got := recv.received(); len(got) != 0 {
			t.Errorf("usage errors sent %d requests, want none", len(got))
		}
	})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			code, stdout, stderr := run(t, append([]string{"-url", recv.server.URL}, tt.args...)...)
			if code != send.ExitUsage {
				t.Errorf("exit status %d, want %d; stdout %q, stderr %q", code, send.ExitUsage, stdout, stderr)
			}
			if !strings.Contains(stderr, tt.wantStderr) {
				t.Errorf("stderr does not contain %q:\n%s", tt.wantStderr, stderr)
			}
			if stdout != "" {
				t.Errorf("stdout %q, want nothing for a usage error", stdout)
			}
			checkNoSecret(t, secret, stdout, stderr)
		})
	}
}

func TestRunHelp(t *testing.T) {
	t.Parallel()
	code, stdout, stderr := run(t, "-h")
	if code != send.ExitOK {
		t.Errorf("exit status %d, want %d", code, send.ExitOK)
	}
	for _, flag := range []string{"-source", "-kind", "-secret-env", "-secret-file", "-hmac-header"} {
		if !strings.Contains(stdout+stderr, flag) {
			t.Errorf("help does not mention %s:\n%s%s", flag, stdout, stderr)
		}
	}
}
