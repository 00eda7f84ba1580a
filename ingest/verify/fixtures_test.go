package verify_test

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/hookbus/hookbus/ingest/verify"
)

// fixtureDir holds sample deliveries and published signature test vectors.
var fixtureDir = filepath.Join("..", "testdata", "webhooks")

// fixtureTime is the timestamp that every Stripe and Slack fixture is signed at.
var fixtureTime = time.Unix(1700000000, 0)

// fixtureSecrets are the placeholder secrets the fixture headers were
// computed with, by provider name as manifest.json spells it.
var fixtureSecrets = map[string]string{
	"GitHub":  "placeholder-github-webhook-secret",
	"Stripe":  "whsec_placeholder_stripe_endpoint_secret",
	"Slack":   "placeholder-slack-signing-secret",
	"Shopify": "placeholder-shopify-client-secret",
}

var fixtureKinds = map[string]string{
	"GitHub":  verify.KindGitHub,
	"Stripe":  verify.KindStripe,
	"Slack":   verify.KindSlack,
	"Shopify": verify.KindShopify,
}

type manifestEntry struct {
	File     string            `json:"file"`
	Bytes    int               `json:"bytes"`
	SHA256   string            `json:"sha256"`
	Provider string            `json:"provider"`
	Headers  map[string]string `json:"headers"`
}

func readManifest(t *testing.T) []manifestEntry {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtureDir, "manifest.json"))
	if err != nil {
		t.Fatalf("read manifest: %v", err)
	}
	var entries []manifestEntry
	if err := json.Unmarshal(data, &entries); err != nil {
		t.Fatalf("parse manifest: %v", err)
	}
	if len(entries) == 0 {
		t.Fatal("manifest lists no fixture files")
	}
	return entries
}

// readFixtureBody returns the body bytes and checks them against the size
// and SHA-256 in the manifest, so that a file changed by an editor or by
// line-ending conversion fails here and not as a signature mismatch.
func readFixtureBody(t *testing.T, entry manifestEntry) []byte {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(fixtureDir, filepath.FromSlash(entry.File)))
	if err != nil {
		t.Fatalf("read fixture: %v", err)
	}
	if len(body) != entry.Bytes {
		t.Fatalf("%s is %d bytes, manifest says %d", entry.File, len(body), entry.Bytes)
	}
	sum := sha256.Sum256(body)
	if got := hex.EncodeToString(sum[:]); got != entry.SHA256 {
		t.Fatalf("%s has SHA-256 %s, manifest says %s", entry.File, got, entry.SHA256)
	}
	return body
}

func headerFromMap(values map[string]string) http.Header {
	header := http.Header{}
	for name, value := range values {
		header.Set(name, value)
	}
	return header
}

func TestFixturesVerifyWithPlaceholderSecrets(t *testing.T) {
	for _, entry := range readManifest(t) {
		t.Run(entry.File, func(t *testing.T) {
			kind, ok := fixtureKinds[entry.Provider]
			if !ok {
				t.Fatalf("no verifier kind for provider %q", entry.Provider)
			}
			body := readFixtureBody(t, entry)
			v, err := verify.New(kind, [][]byte{[]byte(fixtureSecrets[entry.Provider])}, verify.Options{})
			if err != nil {
				t.Fatalf("New: %v", err)
			}

			req := verify.Request{Header: headerFromMap(entry.Headers), Body: body}
			if err := v.Verify(req, fixtureTime); err != nil {
				t.Errorf("Verify: %v", err)
			}

			tampered := verify.Request{Header: req.Header, Body: flipByte(body)}
			if err := v.Verify(tampered, fixtureTime); !errors.Is(err, verify.ErrMismatch) {
				t.Errorf("Verify of tampered body = %v, want ErrMismatch", err)
			}
		})
	}
}

// TestFixturesGitHubLegacySHA1 checks the generic kind against the SHA-1
// header that GitHub still sends next to X-Hub-Signature-256.
func TestFixturesGitHubLegacySHA1(t *testing.T) {
	opts := verify.Options{Header: "X-Hub-Signature", Algorithm: "sha1", Encoding: "hex", Prefix: "sha1="}
	v, err := verify.New(verify.KindHMAC, [][]byte{[]byte(fixtureSecrets["GitHub"])}, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}

	checked := 0
	for _, entry := range readManifest(t) {
		if entry.Provider != "GitHub" {
			continue
		}
		body := readFixtureBody(t, entry)
		req := verify.Request{Header: headerFromMap(entry.Headers), Body: body}
		if err := v.Verify(req, fixtureTime); err != nil {
			t.Errorf("%s: Verify: %v", entry.File, err)
		}
		checked++
	}
	if checked == 0 {
		t.Fatal("manifest lists no GitHub fixtures")
	}
}

// TestFixturesSignMatchesHeaders checks that Sign reproduces the signature
// header of every fixture.
func TestFixturesSignMatchesHeaders(t *testing.T) {
	signatureHeaders := map[string][]string{
		"GitHub":  {"X-Hub-Signature-256"},
		"Stripe":  {"Stripe-Signature"},
		"Slack":   {"X-Slack-Signature", "X-Slack-Request-Timestamp"},
		"Shopify": {"X-Shopify-Hmac-Sha256"},
	}
	for _, entry := range readManifest(t) {
		t.Run(entry.File, func(t *testing.T) {
			body := readFixtureBody(t, entry)
			header, err := verify.Sign(fixtureKinds[entry.Provider], []byte(fixtureSecrets[entry.Provider]), body, fixtureTime, verify.Options{})
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}
			for _, name := range signatureHeaders[entry.Provider] {
				if got, want := header.Get(name), entry.Headers[name]; got != want {
					t.Errorf("%s = %q, want %q", name, got, want)
				}
			}
		})
	}
}

type signatureVector struct {
	Provider          string            `json:"provider"`
	Secret            string            `json:"secret"`
	Timestamp         *int64            `json:"timestamp"`
	ID                *string           `json:"id"`
	Payload           string            `json:"payload"`
	Headers           map[string]string `json:"headers"`
	ExpectedSignature string            `json:"expected_signature"`
	ExpectValid       bool              `json:"expect_valid"`
}

var vectorKinds = map[string]string{
	"github":            verify.KindGitHub,
	"stripe":            verify.KindStripe,
	"slack":             verify.KindSlack,
	"standard-webhooks": verify.KindStandard,
	"svix":              verify.KindStandard,
}

func readVectors(t *testing.T) []signatureVector {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(fixtureDir, "vectors.json"))
	if err != nil {
		t.Fatalf("read vectors: %v", err)
	}
	var vectors []signatureVector
	if err := json.Unmarshal(data, &vectors); err != nil {
		t.Fatalf("parse vectors: %v", err)
	}
	if len(vectors) == 0 {
		t.Fatal("vectors.json holds no vectors")
	}
	return vectors
}

// vectorTime is the fixed clock for a vector: its own timestamp, or
// fixtureTime for schemes without one.
func vectorTime(vector signatureVector) time.Time {
	if vector.Timestamp == nil {
		return fixtureTime
	}
	return time.Unix(*vector.Timestamp, 0)
}

func TestVectors(t *testing.T) {
	for i, vector := range readVectors(t) {
		t.Run(fmt.Sprintf("%d_%s", i, vector.Provider), func(t *testing.T) {
			kind, ok := vectorKinds[vector.Provider]
			if !ok {
				t.Fatalf("no verifier kind for provider %q", vector.Provider)
			}
			v, err := verify.New(kind, [][]byte{[]byte(vector.Secret)}, verify.Options{})
			if err != nil {
				t.Fatalf("New: %v", err)
			}

			req := verify.Request{Header: headerFromMap(vector.Headers), Body: []byte(vector.Payload)}
			err = v.Verify(req, vectorTime(vector))
			if vector.ExpectValid && err != nil {
				t.Errorf("Verify: %v", err)
			}
			if !vector.ExpectValid && !errors.Is(err, verify.ErrMismatch) {
				t.Errorf("Verify = %v, want ErrMismatch", err)
			}
		})
	}
}

// TestVectorsSignReproduces checks that Sign computes each vector's
// expected signature.
func TestVectorsSignReproduces(t *testing.T) {
	for i, vector := range readVectors(t) {
		t.Run(fmt.Sprintf("%d_%s", i, vector.Provider), func(t *testing.T) {
			kind := vectorKinds[vector.Provider]
			var opts verify.Options
			if vector.ID != nil && kind == verify.KindStandard {
				opts.ID = *vector.ID
			}
			header, err := verify.Sign(kind, []byte(vector.Secret), []byte(vector.Payload), vectorTime(vector), opts)
			if err != nil {
				t.Fatalf("Sign: %v", err)
			}

			var got string
			switch kind {
			case verify.KindGitHub:
				got = header.Get("X-Hub-Signature-256")
			case verify.KindSlack:
				got = header.Get("X-Slack-Signature")
			case verify.KindStandard:
				got = header.Get("Webhook-Signature")
			case verify.KindStripe:
				_, got, _ = strings.Cut(header.Get("Stripe-Signature"), ",v1=")
			}
			if got != vector.ExpectedSignature {
				t.Errorf("signature = %q, want %q", got, vector.ExpectedSignature)
			}
		})
	}
}
