package verify

// Fuzz targets for the header parsers. Plain `go test` runs only the seeds.
// To explore, run one target at a time, for example:
//
//	go test -run='^$' -fuzz='^FuzzStripeSignature$' -fuzztime=20s ./verify/

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"
)

var fuzzTime = time.Unix(1700000000, 0)

var fuzzBody = []byte(`{"id":"evt_1"}`)

// checkFuzzError fails unless err is nil or wraps exactly one sentinel. When
// a value is longer than maxHeaderLength, err must be ErrMalformedHeader, or
// ErrMissingHeader when another required header is absent.
func checkFuzzError(t *testing.T, err error, values ...string) {
	t.Helper()
	if err == nil {
		return
	}
	wrapped := 0
	for _, sentinel := range []error{ErrMissingHeader, ErrMalformedHeader, ErrStaleTimestamp, ErrMismatch} {
		if errors.Is(err, sentinel) {
			wrapped++
		}
	}
	if wrapped != 1 {
		t.Fatalf("Verify error %q wraps %d sentinels, want 1", err, wrapped)
	}
	for _, value := range values {
		if len(value) > maxHeaderLength && !errors.Is(err, ErrMalformedHeader) && !errors.Is(err, ErrMissingHeader) {
			t.Fatalf("Verify with a %d-byte header = %v, want ErrMalformedHeader or ErrMissingHeader", len(value), err)
		}
	}
}

func mustNewForFuzz(f *testing.F, kind string, secret string, opts Options) Verifier {
	f.Helper()
	v, err := New(kind, [][]byte{[]byte(secret)}, opts)
	if err != nil {
		f.Fatalf("New(%q): %v", kind, err)
	}
	return v
}

func FuzzStripeSignature(f *testing.F) {
	f.Add("t=1700000000,v1=b33cd0ab73591247f7cea41823de13c36347ab3c9982f54b0eb9984640a8210a")
	f.Add("t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7,v0=63f3a72374a733066c4be69ed7f8e5ac85c22c9f0a6a612ab9a025a9e4ee7eef")
	f.Add("t=12345,v1=223db850321a219883f87e521386df3a7140c95f3f6f88ba90b82e3d3bde649d")
	f.Add("t=,v1=,=,,t=1,t=2")
	f.Add("v1=" + strings.Repeat("ab", 32) + strings.Repeat(",v1=00", 20))
	v := mustNewForFuzz(f, KindStripe, "whsec_placeholder_stripe_endpoint_secret", Options{})

	f.Fuzz(func(t *testing.T, value string) {
		parsed, err := parseStripeSignature(value)
		if err == nil {
			if len(parsed.v1) == 0 || len(parsed.v1) > maxEntries {
				t.Fatalf("parsed %d v1 signatures, want 1 to %d", len(parsed.v1), maxEntries)
			}
			for _, signature := range parsed.v1 {
				if len(signature) != 32 {
					t.Fatalf("parsed a %d-byte v1 signature, want 32", len(signature))
				}
			}
			if _, ok := parseUnixSeconds(parsed.timestamp); !ok {
				t.Fatalf("accepted timestamp %q", parsed.timestamp)
			}
		}

		header := http.Header{headerStripeSignature: {value}}
		checkFuzzError(t, v.Verify(Request{Header: header, Body: fuzzBody}, fuzzTime), value)
	})
}

func FuzzStandardSignature(f *testing.F) {
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	f.Add("msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", "v1,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v2,Ceo5qEr07ixe2NLpvHk3FH9bwy/WavXrAFQ/9tdO6mc= v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
	f.Add("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", "1649367553", "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw=")
	f.Add("", "", "v1a,abc v1, ,v1 v1,,")
	f.Add("id", "-1", strings.Repeat("v1,AAAA ", 40))
	v := mustNewForFuzz(f, KindStandard, "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", Options{})

	f.Fuzz(func(t *testing.T, id, timestamp, signature string) {
		signatures, err := parseStandardSignatures(webhookHeaders.signature, signature)
		if err == nil {
			if len(signatures) == 0 || len(signatures) > maxEntries {
				t.Fatalf("parsed %d v1 signatures, want 1 to %d", len(signatures), maxEntries)
			}
			for _, decoded := range signatures {
				if len(decoded) != 32 {
					t.Fatalf("parsed a %d-byte v1 signature, want 32", len(decoded))
				}
			}
		}

		header := http.Header{webhookHeaders.id: {id}, webhookHeaders.timestamp: {timestamp}, webhookHeaders.signature: {signature}}
		checkFuzzError(t, v.Verify(Request{Header: header, Body: fuzzBody}, fuzzTime), id, timestamp, signature)

		svix := http.Header{svixHeaders.id: {id}, svixHeaders.timestamp: {timestamp}, svixHeaders.signature: {signature}}
		checkFuzzError(t, v.Verify(Request{Header: svix, Body: fuzzBody}, fuzzTime), id, timestamp, signature)
	})
}

func FuzzSlackHeaders(f *testing.F) {
	f.Add("v0=95e808e7e8300a1757cb82d37de002ec9cfc981a94d2417a9cb9342619e528b1", "1700000000")
	f.Add("v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503", "1531420618")
	f.Add("v0=", "999999999999999999")
	f.Add("v1=zz", "+1")
	v := mustNewForFuzz(f, KindSlack, "placeholder-slack-signing-secret", Options{})

	f.Fuzz(func(t *testing.T, signature, timestamp string) {
		decoded, unix, err := parseSlackHeaders(signature, timestamp)
		if err == nil {
			if len(decoded) != 32 {
				t.Fatalf("parsed a %d-byte signature, want 32", len(decoded))
			}
			if unix < 0 {
				t.Fatalf("parsed negative timestamp %d", unix)
			}
		}

		header := http.Header{headerSlackSignature: {signature}, headerSlackTimestamp: {timestamp}}
		checkFuzzError(t, v.Verify(Request{Header: header, Body: fuzzBody}, fuzzTime), signature, timestamp)
	})
}

func FuzzGitHubSignature(f *testing.F) {
	f.Add("sha256=76498c579ca54830c65b27cc5e2dee482dcbf5bd5fc203f12bb8b6960738d5e3")
	f.Add("sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17")
	f.Add("sha1=0a791e626db6b3ef80c62e52be352dd466b80a8a")
	f.Add("sha256=")
	v := mustNewForFuzz(f, KindGitHub, "placeholder-github-webhook-secret", Options{})
	scheme, err := digestSchemeFor(KindGitHub, Options{})
	if err != nil {
		f.Fatal(err)
	}

	f.Fuzz(func(t *testing.T, value string) {
		if digest, err := scheme.parse(value); err == nil && len(digest) != 32 {
			t.Fatalf("parsed a %d-byte digest, want 32", len(digest))
		}

		header := http.Header{headerGitHubSignature: {value}}
		checkFuzzError(t, v.Verify(Request{Header: header, Body: fuzzBody}, fuzzTime), value)
	})
}

// FuzzHMACHeader covers the generic kind with a prefix and hex, the generic
// kind with base64, and Shopify, which share the digest parser.
func FuzzHMACHeader(f *testing.F) {
	f.Add("sha1=0a791e626db6b3ef80c62e52be352dd466b80a8a")
	f.Add("sha1=41fd085537bd172f8f9e296b5a956457741660ff")
	f.Add("Z0PmktpjcCZvNFeKV3DIwsJf/QQRikvs1VTpeH65RmQ=")
	f.Add("sha1=")
	f.Add("====")

	configs := []struct {
		kind string
		opts Options
	}{
		{kind: KindHMAC, opts: Options{Header: "X-Hub-Signature", Algorithm: "sha1", Encoding: "hex", Prefix: "sha1="}},
		{kind: KindHMAC, opts: Options{Header: "X-Hub-Signature", Algorithm: "sha512", Encoding: "base64"}},
		{kind: KindShopify},
	}
	type target struct {
		verifier Verifier
		scheme   digestScheme
	}
	var targets []target
	for _, config := range configs {
		scheme, err := digestSchemeFor(config.kind, config.opts)
		if err != nil {
			f.Fatal(err)
		}
		targets = append(targets, target{verifier: mustNewForFuzz(f, config.kind, "placeholder-secret", config.opts), scheme: scheme})
	}

	f.Fuzz(func(t *testing.T, value string) {
		for _, target := range targets {
			if digest, err := target.scheme.parse(value); err == nil && len(digest) != target.scheme.size {
				t.Fatalf("parsed a %d-byte digest, want %d", len(digest), target.scheme.size)
			}

			header := http.Header{target.scheme.header: {value}}
			checkFuzzError(t, target.verifier.Verify(Request{Header: header, Body: fuzzBody}, fuzzTime), value)
		}
	})
}
