package service_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"

	"github.com/hookbus/hookbus/ingest/service"
	"github.com/hookbus/hookbus/ingest/verify"
	"github.com/hookbus/hookbus/pkg/config"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbittest"
	"github.com/hookbus/hookbus/pkg/topology"
)

// The placeholder secrets that signed the recorded fixture headers, as
// testdata/webhooks/README.md lists them, and made-up secrets for the kinds
// without fixtures.
const (
	verifyGitHubSecret  = "placeholder-github-webhook-secret"
	verifyStripeSecret  = "whsec_placeholder_stripe_endpoint_secret"
	verifySlackSecret   = "placeholder-slack-signing-secret"
	verifyShopifySecret = "placeholder-shopify-client-secret"
	verifyHMACSecret    = "placeholder-generic-hmac-secret"
	// verifyNewGitHubSecret is the second secret of the source "rotating",
	// next to verifyGitHubSecret.
	verifyNewGitHubSecret = "placeholder-github-webhook-secret-new"
)

// verifyStandardSecret is the Standard Webhooks secret of the source
// "standard".
var verifyStandardSecret = srcStandardSecret("placeholder-standard-webhooks-key")

// verifyHMACOptions describe the signature header of the source "generic".
var verifyHMACOptions = verify.Options{Header: "X-Signature", Algorithm: "sha512", Encoding: "base64", Prefix: "sha512="}

// verifySources is HOOKBUS_SOURCES of every service these tests start.
const verifySources = "github:github,stripe:stripe,slack:slack,shopify:shopify,standard:standard,generic:hmac," +
	"rotating:github,open:none"

// verifyRoute is the route whose queue keeps every published message.
const verifyRoute = "verify-all"

// verifyAllSecrets lists every configured secret, for the check that none
// of them reaches the log.
var verifyAllSecrets = []string{
	verifyGitHubSecret, verifyStripeSecret, verifySlackSecret, verifyShopifySecret,
	verifyHMACSecret, verifyNewGitHubSecret, verifyStandardSecret,
}

// verifyEnvVars returns the per-source variables of verifySources.
func verifyEnvVars() map[string]string {
	return map[string]string{
		"HOOKBUS_SOURCE_GITHUB_SECRETS":    verifyGitHubSecret,
		"HOOKBUS_SOURCE_STRIPE_SECRETS":    verifyStripeSecret,
		"HOOKBUS_SOURCE_SLACK_SECRETS":     verifySlackSecret,
		"HOOKBUS_SOURCE_SHOPIFY_SECRETS":   verifyShopifySecret,
		"HOOKBUS_SOURCE_STANDARD_SECRETS":  verifyStandardSecret,
		"HOOKBUS_SOURCE_GENERIC_SECRETS":   verifyHMACSecret,
		"HOOKBUS_SOURCE_GENERIC_HEADER":    verifyHMACOptions.Header,
		"HOOKBUS_SOURCE_GENERIC_ALGORITHM": verifyHMACOptions.Algorithm,
		"HOOKBUS_SOURCE_GENERIC_ENCODING":  verifyHMACOptions.Encoding,
		"HOOKBUS_SOURCE_GENERIC_PREFIX":    verifyHMACOptions.Prefix,
		"HOOKBUS_SOURCE_ROTATING_SECRETS":  verifyGitHubSecret + " " + verifyNewGitHubSecret,
	}
}

// verifyEnv is a running ingest with verified sources and the queue of a
// route bound to every routing key.
type verifyEnv struct {
	baseURL string
	client  *http.Client
	ch      *amqp.Channel
	queue   string
	logs    *syncBuffer
}

// verifyStart declares a fresh namespace with a catch-all route, starts
// ingest with verifySources and waits until it is ready. The cleanup stops
// the service and fails the test when Run returns an error or does not
// return in time.
func verifyStart(t *testing.T) *verifyEnv {
	t.Helper()
	amqpURL := rabbittest.URL(t)
	names := rabbittest.Namespace(t, amqpURL, verifyRoute)
	ch := rabbittest.Channel(t, amqpURL)
	if err := topology.Declare(ch, names); err != nil {
		t.Fatalf("declare topology: %v", err)
	}
	if err := topology.DeclareRoute(ch, names, topology.Route{Name: verifyRoute, Bindings: []string{"#"}}); err != nil {
		t.Fatalf("declare route: %v", err)
	}

	cfg := service.Config{
		Broker:          config.Broker{AMQPURL: amqpURL, Namespace: names.Namespace()},
		Log:             config.Log{LogLevel: "debug", LogFormat: "text"},
		Addr:            "127.0.0.1:0",
		MaxBodyBytes:    1 << 20,
		PublishTimeout:  5 * time.Second,
		PublishChannels: 2,
		ReadTimeout:     10 * time.Second,
		ShutdownGrace:   10 * time.Second,
		Sources:         verifySources,
		LookupEnv:       srcLookup(verifyEnvVars()),
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	svc, err := service.New(cfg, logger)
	if err != nil {
		t.Fatalf("service.New: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- svc.Run(ctx)
	}()
	env := &verifyEnv{
		baseURL: "http://" + svc.Addr(),
		client:  &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{}},
		ch:      ch,
		queue:   names.RouteQueue(verifyRoute),
		logs:    logs,
	}
	t.Cleanup(func() {
		env.client.CloseIdleConnections()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Run did not return within 30s of cancel")
		}
		if t.Failed() {
			t.Logf("service log:\n%s", logs.String())
		}
	})

	env.waitReady(t)
	return env
}

// waitReady polls GET /readyz until it responds 200.
func (env *verifyEnv) waitReady(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		resp, err := env.client.Get(env.baseURL + "/readyz")
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
	t.Fatal("GET /readyz did not respond 200 within 20s")
}

// verifyResponse is an HTTP response with its body read.
type verifyResponse struct {
	status int
	header http.Header
	body   []byte
}

// post sends body to /webhooks/<source> with exactly the given headers.
func (env *verifyEnv) post(t *testing.T, source string, header http.Header, body []byte) verifyResponse {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, env.baseURL+"/webhooks/"+source, bytes.NewReader(body))
	if err != nil {
		t.Fatalf("build request: %v", err)
	}
	req.Header = header.Clone()
	resp, err := env.client.Do(req)
	if err != nil {
		t.Fatalf("POST /webhooks/%s: %v", source, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("POST /webhooks/%s: response %d has no X-Request-Id header", source, resp.StatusCode)
	}
	return verifyResponse{status: resp.StatusCode, header: resp.Header, body: data}
}

// verifyExpectRejected fails unless resp is 401 with the body
// {"error":"invalid signature"}.
func verifyExpectRejected(t *testing.T, label string, resp verifyResponse) {
	t.Helper()
	verifyExpectError(t, label, resp, http.StatusUnauthorized, "invalid signature")
}

// verifyExpectError fails unless resp has the status and a JSON body whose
// only field is "error" with the given message.
func verifyExpectError(t *testing.T, label string, resp verifyResponse, status int, message string) {
	t.Helper()
	if resp.status != status {
		t.Errorf("%s: status %d, want %d; body %s", label, resp.status, status, resp.body)
		return
	}
	var got map[string]string
	if err := json.Unmarshal(resp.body, &got); err != nil {
		t.Errorf("%s: body %q is not a JSON object of strings: %v", label, resp.body, err)
		return
	}
	if len(got) != 1 || got["error"] != message {
		t.Errorf("%s: body %s, want {\"error\":%q}", label, resp.body, message)
	}
}

// verifyExpected is what a published message must carry.
type verifyExpected struct {
	source    string
	kind      string // hookbus-verified-by
	eventType string
	id        string // message id, or empty for the request id
	body      []byte
	header    http.Header // the request headers, which the message must keep
}

// expectAccepted checks that resp is a 202 for want, takes the next message
// from the queue and checks it against want and the response. It returns
// the decoded message and the delivery it came in.
func (env *verifyEnv) expectAccepted(t *testing.T, resp verifyResponse, want verifyExpected) (*contract.Message, amqp.Delivery) {
	t.Helper()
	if resp.status != http.StatusAccepted {
		t.Fatalf("%s: status %d, want 202; body %s", want.source, resp.status, resp.body)
	}
	requestID := resp.header.Get("X-Request-Id")
	wantID := want.id
	if wantID == "" {
		wantID = requestID
	}
	wantKey := contract.RoutingKey(want.source, want.eventType)

	var answer struct {
		ID         string `json:"id"`
		RoutingKey string `json:"routing_key"`
	}
	if err := json.Unmarshal(resp.body, &answer); err != nil {
		t.Errorf("%s: 202 body %q is not JSON: %v", want.source, resp.body, err)
	}
	if answer.ID != wantID {
		t.Errorf("%s: 202 body id %q, want %q", want.source, answer.ID, wantID)
	}
	if answer.RoutingKey != wantKey {
		t.Errorf("%s: 202 body routing_key %q, want %q", want.source, answer.RoutingKey, wantKey)
	}

	got := rabbittest.Drain(t, env.ch, env.queue, 1, 10*time.Second)
	if len(got) != 1 {
		t.Fatalf("%s: no message arrived within 10s after 202", want.source)
	}
	d := got[0]
	msg, err := contract.Decode(&d)
	if err != nil {
		t.Fatalf("%s: decode message: %v", want.source, err)
	}

	if !bytes.Equal(d.Body, want.body) {
		t.Errorf("%s: message body differs from the request body (%d bytes, want %d)", want.source, len(d.Body), len(want.body))
	}
	if msg.ID != wantID {
		t.Errorf("%s: message id %q, want %q", want.source, msg.ID, wantID)
	}
	if msg.Source != want.source {
		t.Errorf("%s: message source %q", want.source, msg.Source)
	}
	if msg.EventType != want.eventType {
		t.Errorf("%s: message event type %q, want %q", want.source, msg.EventType, want.eventType)
	}
	if d.RoutingKey != wantKey {
		t.Errorf("%s: routing key %q, want %q", want.source, d.RoutingKey, wantKey)
	}
	if got := msg.Meta["verified-by"]; got != want.kind {
		t.Errorf("%s: hookbus-verified-by %q, want %q", want.source, got, want.kind)
	}
	if got := msg.Meta["request-id"]; got != requestID {
		t.Errorf("%s: hookbus-request-id %q, want the X-Request-Id %q", want.source, got, requestID)
	}
	if got, sent := msg.ContentType, want.header.Get("Content-Type"); got != sent {
		t.Errorf("%s: content type %q, want %q as sent", want.source, got, sent)
	}
	for name, values := range want.header {
		got := msg.Header.Values(name)
		if strings.Join(got, "\x00") != strings.Join(values, "\x00") {
			t.Errorf("%s: message header %s = %q, want %q as sent", want.source, name, got, values)
		}
	}
	return msg, d
}

// expectOnlyMarker posts an unsigned marker to the source "open" and checks
// that the marker is the next message in the queue and that none follows.
// Ingest responds 202 only after the broker's confirm. A request rejected
// earlier would have had its message confirmed before its own response, so
// that message would sit in front of the marker.
func (env *verifyEnv) expectOnlyMarker(t *testing.T) {
	t.Helper()
	id := "evt_marker_" + rand.Text()
	body := []byte(`{"object":"event","id":"` + id + `","type":"verify.marker"}`)
	header := http.Header{"Content-Type": {"application/json"}}
	resp := env.post(t, "open", header, body)
	env.expectAccepted(t, resp, verifyExpected{
		source: "open", kind: verify.KindNone, eventType: "verify.marker", id: id, body: body, header: header,
	})
	if n := rabbittest.MessageCount(t, env.ch, env.queue); n != 0 {
		t.Errorf("%d messages left in the queue after the marker, want 0", n)
	}
}

// expectNoSecretLogged fails when a configured secret appears in the log.
func (env *verifyEnv) expectNoSecretLogged(t *testing.T) {
	t.Helper()
	logs := env.logs.String()
	for _, secret := range verifyAllSecrets {
		if strings.Contains(logs, secret) {
			t.Errorf("the service log contains the secret %q", secret)
		}
	}
}

// verifyManifestEntry is one entry of testdata/webhooks/manifest.json.
type verifyManifestEntry struct {
	File    string            `json:"file"`
	Bytes   int               `json:"bytes"`
	SHA256  string            `json:"sha256"`
	Headers map[string]string `json:"headers"`
}

// verifyFixture returns the body of a fixture file and the headers it was
// recorded with, after checking the body's size and SHA-256 against the
// manifest.
func verifyFixture(t *testing.T, file string) ([]byte, http.Header) {
	t.Helper()
	dir := filepath.Join("..", "testdata", "webhooks")
	data, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	var entries []verifyManifestEntry
	if err := json.Unmarshal(data, &entries); err != nil {
		t.Fatalf("parse manifest: %v", err)
	}
	for _, entry := range entries {
		if entry.File != file {
			continue
		}
		body, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(file)))
		if err != nil {
			t.Fatalf("read fixture: %v", err)
		}
		sum := sha256.Sum256(body)
		if len(body) != entry.Bytes || hex.EncodeToString(sum[:]) != entry.SHA256 {
			t.Fatalf("%s does not match manifest.json (size %d, want %d); was it reformatted?", file, len(body), entry.Bytes)
		}
		header := http.Header{}
		for name, value := range entry.Headers {
			header.Set(name, value)
		}
		return body, header
	}
	t.Fatalf("manifest.json has no entry for %s", file)
	return nil, nil
}

// verifySignatureHeaders are the headers that carry a signature or its
// signed timestamp in the deliveries of these tests.
var verifySignatureHeaders = []string{
	"X-Hub-Signature-256", "X-Hub-Signature", "Stripe-Signature", "X-Slack-Signature", "X-Slack-Request-Timestamp",
	"X-Shopify-Hmac-Sha256", "Webhook-Signature", "Webhook-Timestamp", verifyHMACOptions.Header,
}

// verifySigned returns header without the signature headers of kind and
// with the headers of body signed with secret at signedAt.
func verifySigned(t *testing.T, header http.Header, kind, secret string, body []byte, signedAt time.Time, opts verify.Options) http.Header {
	t.Helper()
	signature, err := verify.Sign(kind, []byte(secret), body, signedAt, opts)
	if err != nil {
		t.Fatalf("sign as %s: %v", kind, err)
	}
	out := header.Clone()
	if out == nil {
		out = http.Header{}
	}
	for _, name := range verifySignatureHeaders {
		out.Del(name)
	}
	maps.Copy(out, signature)
	return out
}

// verifyFlipByte returns a copy of body with one bit of its middle byte
// flipped.
func verifyFlipByte(body []byte) []byte {
	out := bytes.Clone(body)
	out[len(out)/2] ^= 0x01
	return out
}

// verifyProvider describes a signed delivery of one verifier kind.
type verifyProvider struct {
	source    string
	kind      string
	file      string
	eventType string
	id        string
	secret    string
	opts      verify.Options
	// recorded means the fixture's recorded signature header is sent as
	// it is; otherwise the body is signed at the current time.
	recorded bool
	// baseHeader returns the headers other than the signature.
	baseHeader func(t *testing.T) http.Header
}

// delivery returns the body and headers of p's delivery signed with secret.
// A recorded delivery sent with its own secret keeps its recorded headers.
func (p verifyProvider) delivery(t *testing.T, secret string) ([]byte, http.Header) {
	t.Helper()
	body, header := verifyFixture(t, p.file)
	if p.baseHeader != nil {
		header = p.baseHeader(t)
	}
	if p.recorded && secret == p.secret {
		return body, header
	}
	return body, verifySigned(t, header, p.kind, secret, body, time.Now(), p.opts)
}

func TestVerifyProviderSignatures(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)

	providers := []verifyProvider{
		{
			source: "github", kind: verify.KindGitHub, file: "github/push.json", secret: verifyGitHubSecret, recorded: true,
			eventType: "push", id: "72d3162e-cc78-11e3-81ab-4c9367dc0958",
		},
		{
			source: "stripe", kind: verify.KindStripe, file: "stripe/payment_intent.succeeded.json", secret: verifyStripeSecret,
			eventType: "payment_intent.succeeded", id: "evt_1IlYUUJDPojXS6LN7NEWYSm2",
		},
		{
			source: "slack", kind: verify.KindSlack, file: "slack/event_callback.message.channels.json", secret: verifySlackSecret,
			eventType: "message", id: "Ev111",
		},
		{
			source: "shopify", kind: verify.KindShopify, file: "shopify/orders.create.json", secret: verifyShopifySecret, recorded: true,
			eventType: "orders/create", id: "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
		},
		{
			source: "standard", kind: verify.KindStandard, file: "stripe/invoice.paid.json", secret: verifyStandardSecret,
			opts: verify.Options{ID: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W"}, eventType: "invoice.paid", id: "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
			baseHeader: func(*testing.T) http.Header {
				return http.Header{"Content-Type": {"application/json"}, "User-Agent": {"Svix-Webhooks/1.24.0"}}
			},
		},
		{
			source: "generic", kind: verify.KindHMAC, file: "stripe/customer.updated.json", secret: verifyHMACSecret,
			opts: verifyHMACOptions, eventType: "customer.updated", id: "evt_1DHsSdKCFFPkgtRhy4YMdffC",
			baseHeader: func(*testing.T) http.Header {
				return http.Header{"Content-Type": {"application/json"}}
			},
		},
	}
	for _, p := range providers {
		t.Run(p.kind, func(t *testing.T) {
			if _, err := env.ch.QueuePurge(env.queue, false); err != nil {
				t.Fatalf("purge queue: %v", err)
			}

			body, header := p.delivery(t, p.secret)
			verifyExpectRejected(t, "one flipped byte", env.post(t, p.source, header, verifyFlipByte(body)))

			wrongSecret := "wrong-" + p.secret
			if p.kind == verify.KindStandard {
				wrongSecret = srcStandardSecret("another-standard-webhooks-key")
			}
			_, wrongHeader := p.delivery(t, wrongSecret)
			verifyExpectRejected(t, "wrong secret", env.post(t, p.source, wrongHeader, body))

			unsigned := header.Clone()
			for _, name := range verifySignatureHeaders {
				unsigned.Del(name)
			}
			verifyExpectRejected(t, "no signature", env.post(t, p.source, unsigned, body))

			// The only message in the queue must be the valid delivery,
			// which is sent after the rejected ones.
			resp := env.post(t, p.source, header, body)
			msg, _ := env.expectAccepted(t, resp, verifyExpected{
				source: p.source, kind: p.kind, eventType: p.eventType, id: p.id, body: body, header: header,
			})
			if n := rabbittest.MessageCount(t, env.ch, env.queue); n != 0 {
				t.Errorf("%d more messages in the queue, want only the valid delivery", n)
			}

			// The message keeps the signature, so a consumer can check it
			// again.
			verifier, err := verify.New(p.kind, [][]byte{[]byte(p.secret)}, verify.Options{
				Header: p.opts.Header, Algorithm: p.opts.Algorithm, Encoding: p.opts.Encoding, Prefix: p.opts.Prefix,
			})
			if err != nil {
				t.Fatalf("verify.New: %v", err)
			}
			if err := verifier.Verify(verify.Request{Header: msg.Header, Body: msg.Body}, time.Now()); err != nil {
				t.Errorf("the published message does not verify again: %v", err)
			}
		})
	}
	env.expectNoSecretLogged(t)
}

func TestVerifyRejectsStaleTimestamps(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	now := time.Now()

	stripeBody, stripeHeader := verifyFixture(t, "stripe/invoice.paid.json")
	slackBody, slackHeader := verifyFixture(t, "slack/event_callback.app_mention.json")
	standardBody := []byte(`{"type":"user.created","data":{"id":"u_1"}}`)
	standardHeader := http.Header{"Content-Type": {"application/json"}}

	tests := []struct {
		name     string
		source   string
		kind     string
		secret   string
		header   http.Header
		body     []byte
		signedAt time.Time
	}{
		{"stripe 10 minutes ago", "stripe", verify.KindStripe, verifyStripeSecret, stripeHeader, stripeBody, now.Add(-10 * time.Minute)},
		{"stripe 10 minutes ahead", "stripe", verify.KindStripe, verifyStripeSecret, stripeHeader, stripeBody, now.Add(10 * time.Minute)},
		{"stripe recorded in 2023", "stripe", verify.KindStripe, verifyStripeSecret, stripeHeader, stripeBody, time.Unix(1700000000, 0)},
		{"slack 10 minutes ago", "slack", verify.KindSlack, verifySlackSecret, slackHeader, slackBody, now.Add(-10 * time.Minute)},
		{"standard 10 minutes ago", "standard", verify.KindStandard, verifyStandardSecret, standardHeader, standardBody, now.Add(-10 * time.Minute)},
	}
	for _, tt := range tests {
		header := verifySigned(t, tt.header, tt.kind, tt.secret, tt.body, tt.signedAt, verify.Options{})
		verifyExpectRejected(t, tt.name, env.post(t, tt.source, header, tt.body))
	}

	// The recorded Stripe header, signed at 1700000000, is stale too.
	verifyExpectRejected(t, "recorded stripe header", env.post(t, "stripe", stripeHeader, stripeBody))

	// Inside the default tolerance of 5 minutes the same bodies pass.
	header := verifySigned(t, stripeHeader, verify.KindStripe, verifyStripeSecret, stripeBody, now.Add(-4*time.Minute), verify.Options{})
	env.expectAccepted(t, env.post(t, "stripe", header, stripeBody), verifyExpected{
		source: "stripe", kind: verify.KindStripe, eventType: "invoice.paid", id: "evt_1KJrGtJDPojXS6LN15fcthM3", body: stripeBody, header: header,
	})

	env.expectOnlyMarker(t)
	env.expectNoSecretLogged(t)
}

func TestVerifyAcceptsRotatedSecrets(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)

	// The recorded header was signed with the old secret.
	oldBody, oldHeader := verifyFixture(t, "github/issues.opened.json")
	env.expectAccepted(t, env.post(t, "rotating", oldHeader, oldBody), verifyExpected{
		source: "rotating", kind: verify.KindGitHub, eventType: "issues", id: "72d3162e-cc78-11e3-81ab-4c9367dc0958", body: oldBody, header: oldHeader,
	})

	newBody, newHeader := verifyFixture(t, "github/pull_request.opened.json")
	newHeader = verifySigned(t, newHeader, verify.KindGitHub, verifyNewGitHubSecret, newBody, time.Now(), verify.Options{})
	newHeader.Set("X-GitHub-Delivery", "a1b2c3d4-0000-4000-8000-000000000001")
	env.expectAccepted(t, env.post(t, "rotating", newHeader, newBody), verifyExpected{
		source: "rotating", kind: verify.KindGitHub, eventType: "pull_request", id: "a1b2c3d4-0000-4000-8000-000000000001", body: newBody, header: newHeader,
	})

	// The source "github" has only the old secret.
	verifyExpectRejected(t, "new secret on a source without it", env.post(t, "github", newHeader, newBody))
	otherHeader := verifySigned(t, newHeader, verify.KindGitHub, "placeholder-github-webhook-secret-other", newBody, time.Now(), verify.Options{})
	verifyExpectRejected(t, "third secret", env.post(t, "rotating", otherHeader, newBody))

	env.expectOnlyMarker(t)
	env.expectNoSecretLogged(t)
}

func TestVerifySlackURLVerification(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	body, recorded := verifyFixture(t, "slack/url_verification.json")
	var handshake struct {
		Challenge string `json:"challenge"`
	}
	if err := json.Unmarshal(body, &handshake); err != nil || handshake.Challenge == "" {
		t.Fatalf("fixture has no challenge: %v", err)
	}

	header := verifySigned(t, recorded, verify.KindSlack, verifySlackSecret, body, time.Now(), verify.Options{})
	resp := env.post(t, "slack", header, body)
	if resp.status != http.StatusOK {
		t.Fatalf("status %d, want 200; body %s", resp.status, resp.body)
	}
	if ct := resp.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var answer map[string]string
	if err := json.Unmarshal(resp.body, &answer); err != nil {
		t.Fatalf("body %q is not a JSON object of strings: %v", resp.body, err)
	}
	if len(answer) != 1 || answer["challenge"] != handshake.Challenge {
		t.Errorf("body %s, want {\"challenge\":%q}", resp.body, handshake.Challenge)
	}

	// A source of kind none returns the challenge too, without a signature.
	unsigned := http.Header{"Content-Type": {"application/json"}}
	resp = env.post(t, "open", unsigned, body)
	if resp.status != http.StatusOK || !bytes.Contains(resp.body, []byte(handshake.Challenge)) {
		t.Errorf("unsigned handshake on a source of kind none: status %d, body %s; want 200 with the challenge", resp.status, resp.body)
	}

	// A handshake with a bad signature gets no challenge back.
	verifyExpectRejected(t, "handshake with a wrong secret", env.post(t, "slack",
		verifySigned(t, recorded, verify.KindSlack, "wrong-slack-secret", body, time.Now(), verify.Options{}), body))
	verifyExpectRejected(t, "recorded handshake signed in 2023", env.post(t, "slack", recorded, body))

	env.expectOnlyMarker(t)
	env.expectNoSecretLogged(t)
}

func TestVerifyGitHubPing(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	body, header := verifyFixture(t, "github/ping.json")

	env.expectAccepted(t, env.post(t, "github", header, body), verifyExpected{
		source: "github", kind: verify.KindGitHub, eventType: "ping", id: "72d3162e-cc78-11e3-81ab-4c9367dc0958", body: body, header: header,
	})
	if n := rabbittest.MessageCount(t, env.ch, env.queue); n != 0 {
		t.Errorf("%d more messages in the queue, want only the ping", n)
	}
}

func TestVerifySlackBlockActionsForm(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	body, recorded := verifyFixture(t, "slack/block_actions.form")
	if ct := recorded.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
		t.Fatalf("fixture Content-Type %q, want form-encoded", ct)
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		t.Fatalf("parse fixture form: %v", err)
	}
	var payload struct {
		TriggerID string `json:"trigger_id"`
	}
	if err := json.Unmarshal([]byte(form.Get("payload")), &payload); err != nil || payload.TriggerID == "" {
		t.Fatalf("fixture payload has no trigger_id: %v", err)
	}

	header := verifySigned(t, recorded, verify.KindSlack, verifySlackSecret, body, time.Now(), verify.Options{})
	msg, _ := env.expectAccepted(t, env.post(t, "slack", header, body), verifyExpected{
		source: "slack", kind: verify.KindSlack, eventType: "block_actions", id: payload.TriggerID, body: body, header: header,
	})
	if !bytes.HasPrefix(msg.Body, []byte("payload=%7B")) {
		t.Errorf("message body starts with %q, want the raw form bytes", msg.Body[:min(len(msg.Body), 16)])
	}
	if n := rabbittest.MessageCount(t, env.ch, env.queue); n != 0 {
		t.Errorf("%d more messages in the queue, want only the form delivery", n)
	}
}

func TestVerifyContentTypes(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	body, recorded := verifyFixture(t, "stripe/payment_intent.succeeded.json")

	for _, contentType := range []string{
		"application/json; charset=utf-8",
		"application/json;charset=UTF-8",
		"APPLICATION/JSON",
		"application/vnd.stripe.event+json; version=2020-03-02",
		"text/plain",
		"", // no Content-Type header at all
	} {
		header := verifySigned(t, recorded, verify.KindStripe, verifyStripeSecret, body, time.Now(), verify.Options{})
		header.Del("Content-Type")
		if contentType != "" {
			header.Set("Content-Type", contentType)
		}
		env.expectAccepted(t, env.post(t, "stripe", header, body), verifyExpected{
			source: "stripe", kind: verify.KindStripe, eventType: "payment_intent.succeeded", id: "evt_1IlYUUJDPojXS6LN7NEWYSm2", body: body, header: header,
		})
	}

	// A vendor type with the recorded GitHub signature.
	ghBody, ghHeader := verifyFixture(t, "github/push.json")
	ghHeader.Set("Content-Type", "application/vnd.github+json")
	env.expectAccepted(t, env.post(t, "github", ghHeader, ghBody), verifyExpected{
		source: "github", kind: verify.KindGitHub, eventType: "push", id: "72d3162e-cc78-11e3-81ab-4c9367dc0958", body: ghBody, header: ghHeader,
	})

	if n := rabbittest.MessageCount(t, env.ch, env.queue); n != 0 {
		t.Errorf("%d more messages in the queue, want none", n)
	}
}

func TestVerifyStripeBodyWithBOM(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	fixture, recorded := verifyFixture(t, "stripe/payment_intent.succeeded.json")
	body := append([]byte("\xef\xbb\xbf"), fixture...)

	header := verifySigned(t, recorded, verify.KindStripe, verifyStripeSecret, body, time.Now(), verify.Options{})
	env.expectAccepted(t, env.post(t, "stripe", header, body), verifyExpected{
		source: "stripe", kind: verify.KindStripe, eventType: "payment_intent.succeeded", id: "evt_1IlYUUJDPojXS6LN7NEWYSm2", body: body, header: header,
	})

	// The signature covers the BOM: the body without it does not verify.
	verifyExpectRejected(t, "BOM stripped after signing", env.post(t, "stripe", header, fixture))
	env.expectOnlyMarker(t)
}

func TestVerifyCompressedBodyRejected(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	plain, recorded := verifyFixture(t, "github/push.json")
	var compressed bytes.Buffer
	zw := gzip.NewWriter(&compressed)
	if _, err := zw.Write(plain); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	if err := zw.Close(); err != nil {
		t.Fatalf("gzip: %v", err)
	}
	body := compressed.Bytes()

	// Signed over the compressed bytes, so only the encoding is at fault.
	signed := verifySigned(t, recorded, verify.KindGitHub, verifyGitHubSecret, body, time.Now(), verify.Options{})
	for _, encoding := range []string{"gzip", "GZIP", "x-gzip", "br", "deflate", "gzip, identity"} {
		header := signed.Clone()
		header.Set("Content-Encoding", encoding)
		resp := env.post(t, "github", header, body)
		if resp.status != http.StatusUnsupportedMediaType {
			t.Errorf("Content-Encoding %q: status %d, want 415; body %s", encoding, resp.status, resp.body)
			continue
		}
		var answer map[string]string
		if err := json.Unmarshal(resp.body, &answer); err != nil || answer["error"] == "" {
			t.Errorf("Content-Encoding %q: 415 body %q has no JSON error message", encoding, resp.body)
		}
	}

	// Content-Encoding: identity means no encoding and is accepted.
	header := recorded.Clone()
	header.Set("Content-Encoding", "identity")
	env.expectAccepted(t, env.post(t, "github", header, plain), verifyExpected{
		source: "github", kind: verify.KindGitHub, eventType: "push", id: "72d3162e-cc78-11e3-81ab-4c9367dc0958", body: plain, header: header,
	})
	env.expectOnlyMarker(t)
}

func TestVerifySlackRetryHeadersKept(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	body, recorded := verifyFixture(t, "slack/event_callback.app_mention.json")
	header := verifySigned(t, recorded, verify.KindSlack, verifySlackSecret, body, time.Now(), verify.Options{})
	header.Set("X-Slack-Retry-Num", "2")
	header.Set("X-Slack-Retry-Reason", "http_timeout")

	_, d := env.expectAccepted(t, env.post(t, "slack", header, body), verifyExpected{
		source: "slack", kind: verify.KindSlack, eventType: "app_mention", id: "Ev111", body: body, header: header,
	})

	// Consumers in other languages read the raw AMQP headers.
	for key, want := range map[string]string{
		"http.x-slack-retry-num":    "2",
		"http.x-slack-retry-reason": "http_timeout",
	} {
		if value, _ := d.Headers[key].(string); value != want {
			t.Errorf("AMQP header %s = %#v, want %q", key, d.Headers[key], want)
		}
	}
}

func TestVerifyUnverifiedSource(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	body := []byte(`{"type":"build.finished","status":"ok"}`)

	header := http.Header{"Content-Type": {"application/json"}}
	env.expectAccepted(t, env.post(t, "open", header, body), verifyExpected{
		source: "open", kind: verify.KindNone, eventType: "build.finished", body: body, header: header,
	})

	// Signature headers on a source of kind none are neither checked nor
	// dropped.
	header = http.Header{"Content-Type": {"application/json"}, "X-Hub-Signature-256": {"sha256=not-a-signature"}}
	env.expectAccepted(t, env.post(t, "open", header, body), verifyExpected{
		source: "open", kind: verify.KindNone, eventType: "build.finished", body: body, header: header,
	})

	// The same unsigned body on a verified source is rejected.
	verifyExpectRejected(t, "unsigned body on the source github", env.post(t, "github", http.Header{"Content-Type": {"application/json"}}, body))
	env.expectOnlyMarker(t)
}

func TestVerifyUnknownSource(t *testing.T) {
	t.Parallel()
	env := verifyStart(t)
	body, header := verifyFixture(t, "github/push.json")

	for _, source := range []string{"gitlab", "github-enterprise"} {
		verifyExpectError(t, "source "+source, env.post(t, source, header, body), http.StatusNotFound, "unknown source")
	}
	for _, source := range []string{"GitHub", "git%2Ehub"} {
		verifyExpectError(t, "source "+source, env.post(t, source, header, body), http.StatusNotFound, "invalid source name: use 1 to 64 lowercase letters, digits, '-' or '_'")
	}
	env.expectOnlyMarker(t)
}
