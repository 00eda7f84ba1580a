package verify_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hookbus/hookbus/ingest/verify"
)

var (
	testBody = []byte(`{"id":"evt_1","type":"test.event","data":{"amount":1200,"note":"caf\u00e9"}}`)
	testTime = time.Unix(1700000000, 0)
)

var sentinels = []error{verify.ErrMissingHeader, verify.ErrMalformedHeader, verify.ErrStaleTimestamp, verify.ErrMismatch}

// kindConfig is one verifier configuration under test.
type kindConfig struct {
	name string
	kind string
	opts verify.Options
	// headers are the headers the kind requires, signature header first.
	headers []string
}

var kindConfigs = []kindConfig{
	{name: "github", kind: verify.KindGitHub, headers: []string{"X-Hub-Signature-256"}},
	{name: "stripe", kind: verify.KindStripe, headers: []string{"Stripe-Signature"}},
	{name: "slack", kind: verify.KindSlack, headers: []string{"X-Slack-Signature", "X-Slack-Request-Timestamp"}},
	{name: "shopify", kind: verify.KindShopify, headers: []string{"X-Shopify-Hmac-Sha256"}},
	{name: "standard", kind: verify.KindStandard, headers: []string{"Webhook-Signature", "Webhook-Id", "Webhook-Timestamp"}},
	{
		name:    "hmac_sha1_hex_prefix",
		kind:    verify.KindHMAC,
		opts:    verify.Options{Header: "X-Hub-Signature", Algorithm: "sha1", Encoding: "hex", Prefix: "sha1="},
		headers: []string{"X-Hub-Signature"},
	},
	{
		name:    "hmac_sha512_base64",
		kind:    verify.KindHMAC,
		opts:    verify.Options{Header: "x-signature", Algorithm: "sha512", Encoding: "base64"},
		headers: []string{"X-Signature"},
	},
	{
		name:    "hmac_defaults",
		kind:    verify.KindHMAC,
		opts:    verify.Options{Header: "X-Webhook-Signature"},
		headers: []string{"X-Webhook-Signature"},
	},
}

// testSecrets returns an old, a new and an unrelated secret for kind. Kind
// "standard" needs base64 after a whsec_ prefix.
func testSecrets(kind string) (oldSecret, newSecret, otherSecret []byte) {
	if kind == verify.KindStandard {
		encode := func(key string) []byte {
			return []byte("whsec_" + base64.StdEncoding.EncodeToString([]byte(key)))
		}
		return encode("old-placeholder-key-24by"), encode("new-placeholder-key-24by"), encode("unrelated-placeholder-key")
	}
	return []byte("old-placeholder-secret"), []byte("new-placeholder-secret"), []byte("unrelated-placeholder-secret")
}

func mustNew(t *testing.T, kind string, secrets [][]byte, opts verify.Options) verify.Verifier {
	t.Helper()
	v, err := verify.New(kind, secrets, opts)
	if err != nil {
		t.Fatalf("New(%q): %v", kind, err)
	}
	return v
}

func mustSign(t *testing.T, kind string, secret, body []byte, at time.Time, opts verify.Options) http.Header {
	t.Helper()
	header, err := verify.Sign(kind, secret, body, at, opts)
	if err != nil {
		t.Fatalf("Sign(%q): %v", kind, err)
	}
	return header
}

// flipByte returns a copy of data with the lowest bit of its middle byte
// inverted.
func flipByte(data []byte) []byte {
	flipped := bytes.Clone(data)
	flipped[len(flipped)/2] ^= 0x01
	return flipped
}

func withHeader(header http.Header, name, value string) http.Header {
	changed := header.Clone()
	changed.Set(name, value)
	return changed
}

func withoutHeader(header http.Header, name string) http.Header {
	changed := header.Clone()
	changed.Del(name)
	return changed
}

type verifyCase struct {
	name   string
	header http.Header
	body   []byte
	now    time.Time
	// want is nil for a request that must pass, otherwise the sentinel.
	want error
}

func runCases(t *testing.T, v verify.Verifier, cases []verifyCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := v.Verify(verify.Request{Header: tc.header, Body: tc.body}, tc.now)
			checkVerifyError(t, err, tc.want)
		})
	}
}

// checkVerifyError checks that err is nil when want is nil, and otherwise
// that err wraps want and no other sentinel.
func checkVerifyError(t *testing.T, err, want error) {
	t.Helper()
	if want == nil {
		if err != nil {
			t.Errorf("Verify = %v, want nil", err)
		}
		return
	}
	if !errors.Is(err, want) {
		t.Errorf("Verify = %v, want %v", err, want)
	}
	for _, other := range sentinels {
		if other != want && errors.Is(err, other) {
			t.Errorf("Verify = %v, also wraps %v", err, other)
		}
	}
}

func TestVerifyCommonCases(t *testing.T) {
	for _, config := range kindConfigs {
		t.Run(config.name, func(t *testing.T) {
			_, newSecret, otherSecret := testSecrets(config.kind)
			v := mustNew(t, config.kind, [][]byte{newSecret}, config.opts)
			valid := mustSign(t, config.kind, newSecret, testBody, testTime, config.opts)
			wrongSecret := mustSign(t, config.kind, otherSecret, testBody, testTime, config.opts)

			cases := []verifyCase{
				{name: "valid", header: valid, body: testBody, now: testTime},
				{name: "tampered body", header: valid, body: flipByte(testBody), now: testTime, want: verify.ErrMismatch},
				{name: "empty body", header: valid, body: nil, now: testTime, want: verify.ErrMismatch},
				{name: "wrong secret", header: wrongSecret, body: testBody, now: testTime, want: verify.ErrMismatch},
				{name: "nil header", header: nil, body: testBody, now: testTime, want: verify.ErrMissingHeader},
			}
			for _, name := range config.headers {
				cases = append(cases,
					verifyCase{name: "missing " + name, header: withoutHeader(valid, name), body: testBody, now: testTime, want: verify.ErrMissingHeader},
					verifyCase{name: "empty " + name, header: withHeader(valid, name, ""), body: testBody, now: testTime, want: verify.ErrMissingHeader},
					verifyCase{name: "oversized " + name, header: withHeader(valid, name, strings.Repeat("1", 5000)), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
				)
			}
			runCases(t, v, cases)
		})
	}
}

func TestVerifyRotatedSecrets(t *testing.T) {
	for _, config := range kindConfigs {
		t.Run(config.name, func(t *testing.T) {
			oldSecret, newSecret, otherSecret := testSecrets(config.kind)
			signedOld := mustSign(t, config.kind, oldSecret, testBody, testTime, config.opts)
			signedNew := mustSign(t, config.kind, newSecret, testBody, testTime, config.opts)
			signedOther := mustSign(t, config.kind, otherSecret, testBody, testTime, config.opts)

			cases := []verifyCase{
				{name: "signed with new", header: signedNew, body: testBody, now: testTime},
				{name: "signed with old", header: signedOld, body: testBody, now: testTime},
				{name: "signed with other", header: signedOther, body: testBody, now: testTime, want: verify.ErrMismatch},
			}
			t.Run("old first", func(t *testing.T) {
				runCases(t, mustNew(t, config.kind, [][]byte{oldSecret, newSecret}, config.opts), cases)
			})
			t.Run("new first", func(t *testing.T) {
				runCases(t, mustNew(t, config.kind, [][]byte{newSecret, oldSecret}, config.opts), cases)
			})
			t.Run("old removed", func(t *testing.T) {
				v := mustNew(t, config.kind, [][]byte{newSecret}, config.opts)
				err := v.Verify(verify.Request{Header: signedOld, Body: testBody}, testTime)
				checkVerifyError(t, err, verify.ErrMismatch)
			})
		})
	}
}

func TestVerifyTimestampWindow(t *testing.T) {
	for _, kind := range []string{verify.KindStripe, verify.KindSlack, verify.KindStandard} {
		t.Run(kind, func(t *testing.T) {
			_, secret, otherSecret := testSecrets(kind)
			signed := mustSign(t, kind, secret, testBody, testTime, verify.Options{})
			wrongSecret := mustSign(t, kind, otherSecret, testBody, testTime, verify.Options{})

			t.Run("default tolerance", func(t *testing.T) {
				runCases(t, mustNew(t, kind, [][]byte{secret}, verify.Options{}), []verifyCase{
					{name: "300s old", header: signed, body: testBody, now: testTime.Add(300 * time.Second)},
					{name: "301s old", header: signed, body: testBody, now: testTime.Add(301 * time.Second), want: verify.ErrStaleTimestamp},
					{name: "one day old", header: signed, body: testBody, now: testTime.Add(24 * time.Hour), want: verify.ErrStaleTimestamp},
					{name: "300s ahead", header: signed, body: testBody, now: testTime.Add(-300 * time.Second)},
					{name: "301s ahead", header: signed, body: testBody, now: testTime.Add(-301 * time.Second), want: verify.ErrStaleTimestamp},
					{name: "zero clock", header: signed, body: testBody, now: time.Time{}, want: verify.ErrStaleTimestamp},
					{name: "stale and wrong secret", header: wrongSecret, body: testBody, now: testTime.Add(time.Hour), want: verify.ErrMismatch},
				})
			})
			t.Run("10s tolerance", func(t *testing.T) {
				runCases(t, mustNew(t, kind, [][]byte{secret}, verify.Options{Tolerance: 10 * time.Second}), []verifyCase{
					{name: "10s old", header: signed, body: testBody, now: testTime.Add(10 * time.Second)},
					{name: "11s old", header: signed, body: testBody, now: testTime.Add(11 * time.Second), want: verify.ErrStaleTimestamp},
					{name: "11s ahead", header: signed, body: testBody, now: testTime.Add(-11 * time.Second), want: verify.ErrStaleTimestamp},
				})
			})
		})
	}
}

func TestVerifyIgnoresClockWithoutTimestamp(t *testing.T) {
	for _, config := range kindConfigs {
		if config.kind == verify.KindStripe || config.kind == verify.KindSlack || config.kind == verify.KindStandard {
			continue
		}
		t.Run(config.name, func(t *testing.T) {
			_, secret, _ := testSecrets(config.kind)
			v := mustNew(t, config.kind, [][]byte{secret}, config.opts)
			header := mustSign(t, config.kind, secret, testBody, testTime, config.opts)
			runCases(t, v, []verifyCase{
				{name: "one year later", header: header, body: testBody, now: testTime.AddDate(1, 0, 0)},
				{name: "zero clock", header: header, body: testBody, now: time.Time{}},
			})
		})
	}
}

// hmacSHA256 computes a signature independently of the package under test.
func hmacSHA256(key []byte, parts ...string) []byte {
	mac := hmac.New(sha256.New, key)
	for _, part := range parts {
		mac.Write([]byte(part))
	}
	return mac.Sum(nil)
}

func TestGitHubHeaderForms(t *testing.T) {
	secret := []byte("placeholder-github-secret")
	v := mustNew(t, verify.KindGitHub, [][]byte{secret}, verify.Options{})
	digest := hex.EncodeToString(hmacSHA256(secret, string(testBody)))
	header := func(value string) http.Header {
		return http.Header{"X-Hub-Signature-256": {value}}
	}

	runCases(t, v, []verifyCase{
		{name: "valid", header: header("sha256=" + digest), body: testBody, now: testTime},
		{name: "uppercase hex", header: header("sha256=" + strings.ToUpper(digest)), body: testBody, now: testTime},
		{name: "no prefix", header: header(digest), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "sha1 prefix", header: header("sha1=" + digest), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "uppercase prefix", header: header("SHA256=" + digest), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "short digest", header: header("sha256=" + digest[:62]), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "long digest", header: header("sha256=" + digest + "00"), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "non-hex digit", header: header("sha256=" + digest[:63] + "g"), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "prefix only", header: header("sha256="), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{
			name:   "legacy sha1 header only",
			header: http.Header{"X-Hub-Signature": {"sha1=0a791e626db6b3ef80c62e52be352dd466b80a8a"}},
			body:   testBody, now: testTime, want: verify.ErrMissingHeader,
		},
	})
}

func TestShopifyHeaderForms(t *testing.T) {
	secret := []byte("placeholder-shopify-secret")
	v := mustNew(t, verify.KindShopify, [][]byte{secret}, verify.Options{})
	mac := hmacSHA256(secret, string(testBody))
	digest := base64.StdEncoding.EncodeToString(mac)
	header := func(value string) http.Header {
		return http.Header{"X-Shopify-Hmac-Sha256": {value}}
	}

	runCases(t, v, []verifyCase{
		{name: "valid", header: header(digest), body: testBody, now: testTime},
		{name: "hex digest", header: header(hex.EncodeToString(mac)), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "no padding", header: header(strings.TrimRight(digest, "=")), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "URL-safe alphabet", header: header("-" + digest[1:]), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "non-zero padding bits", header: header(setPaddingBits(digest)), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "prefixed", header: header("sha256=" + digest), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
	})
}

// setPaddingBits returns a padded base64 text for 32 bytes whose last data
// character has its unused low bits set. A lenient decoder reads the same
// bytes from it, a strict one rejects it.
func setPaddingBits(encoded string) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	last := len(encoded) - 2 // 32 bytes encode to 43 characters and one '='
	index := strings.IndexByte(alphabet, encoded[last])
	return encoded[:last] + string(alphabet[index|0x01]) + encoded[last+1:]
}

func TestStripeHeaderForms(t *testing.T) {
	secret := []byte("whsec_placeholder_stripe_secret")
	v := mustNew(t, verify.KindStripe, [][]byte{secret}, verify.Options{})
	const ts = "1700000000"
	good := hex.EncodeToString(hmacSHA256(secret, ts, ".", string(testBody)))
	bad := hex.EncodeToString(hmacSHA256([]byte("whsec_other"), ts, ".", string(testBody)))
	header := func(value string) http.Header {
		return http.Header{"Stripe-Signature": {value}}
	}
	valid := func(name, value string) verifyCase {
		return verifyCase{name: name, header: header(value), body: testBody, now: testTime}
	}
	invalid := func(name, value string, want error) verifyCase {
		return verifyCase{name: name, header: header(value), body: testBody, now: testTime, want: want}
	}

	runCases(t, v, []verifyCase{
		valid("valid", "t="+ts+",v1="+good),
		valid("valid among several v1", "t="+ts+",v1="+bad+",v1="+good+",v1="+bad),
		valid("valid first of several", "t="+ts+",v1="+good+",v1="+bad),
		valid("v0 entry ignored", "t="+ts+",v1="+good+",v0="+bad),
		valid("unknown scheme ignored", "t="+ts+",v9=x,v1="+good),
		valid("t after v1", "v1="+good+",t="+ts),
		valid("space after comma", "t="+ts+", v1="+good),
		valid("trailing comma", "t="+ts+",v1="+good+","),
		valid("uppercase hex", "t="+ts+",v1="+strings.ToUpper(good)),
		valid("v1 too short skipped", "t="+ts+",v1=abcd,v1="+good),
		valid("valid as 16th entry", "t="+ts+strings.Repeat(",v1="+bad, 14)+",v1="+good),
		invalid("valid after 16 entries ignored", "t="+ts+strings.Repeat(",v1="+bad, 15)+",v1="+good, verify.ErrMismatch),
		invalid("no t", "v1="+good, verify.ErrMalformedHeader),
		invalid("two t", "t="+ts+",t="+ts+",v1="+good, verify.ErrMalformedHeader),
		invalid("t not a number", "t=abc,v1="+good, verify.ErrMalformedHeader),
		invalid("t negative", "t=-1,v1="+good, verify.ErrMalformedHeader),
		invalid("t with plus sign", "t=+"+ts+",v1="+good, verify.ErrMalformedHeader),
		invalid("t with fraction", "t="+ts+".5,v1="+good, verify.ErrMalformedHeader),
		invalid("t too many digits", "t=1234567890123456789,v1="+good, verify.ErrMalformedHeader),
		invalid("t empty", "t=,v1="+good, verify.ErrMalformedHeader),
		invalid("no v1", "t="+ts, verify.ErrMalformedHeader),
		invalid("only v0", "t="+ts+",v0="+good, verify.ErrMalformedHeader),
		invalid("v1 too short", "t="+ts+",v1="+good[:10], verify.ErrMalformedHeader),
		invalid("v1 not hex", "t="+ts+",v1="+strings.Repeat("z", 64), verify.ErrMalformedHeader),
		invalid("entry without equals", "t="+ts+",v1", verify.ErrMalformedHeader),
		invalid("only commas", ",,,", verify.ErrMalformedHeader),
		invalid("only a wrong v1", "t="+ts+",v1="+bad, verify.ErrMismatch),
		invalid("t differs from signed", "t=1700000001,v1="+good, verify.ErrMismatch),
	})
}

// TestStripeSecretUsedAsIs checks that the whsec_ prefix is part of the key
// for Stripe, unlike for Standard Webhooks.
func TestStripeSecretUsedAsIs(t *testing.T) {
	v := mustNew(t, verify.KindStripe, [][]byte{[]byte("whsec_abc")}, verify.Options{})
	const ts = "1700000000"
	withoutPrefix := hex.EncodeToString(hmacSHA256([]byte("abc"), ts, ".", string(testBody)))
	withPrefix := hex.EncodeToString(hmacSHA256([]byte("whsec_abc"), ts, ".", string(testBody)))

	runCases(t, v, []verifyCase{
		{name: "key with prefix", header: http.Header{"Stripe-Signature": {"t=" + ts + ",v1=" + withPrefix}}, body: testBody, now: testTime},
		{name: "key without prefix", header: http.Header{"Stripe-Signature": {"t=" + ts + ",v1=" + withoutPrefix}}, body: testBody, now: testTime, want: verify.ErrMismatch},
	})
}

func TestSlackHeaderForms(t *testing.T) {
	secret := []byte("placeholder-slack-secret")
	v := mustNew(t, verify.KindSlack, [][]byte{secret}, verify.Options{})
	const ts = "1700000000"
	good := hex.EncodeToString(hmacSHA256(secret, "v0:"+ts+":", string(testBody)))
	header := func(signature, timestamp string) http.Header {
		return http.Header{"X-Slack-Signature": {signature}, "X-Slack-Request-Timestamp": {timestamp}}
	}
	invalid := func(name, signature, timestamp string, want error) verifyCase {
		return verifyCase{name: name, header: header(signature, timestamp), body: testBody, now: testTime, want: want}
	}

	runCases(t, v, []verifyCase{
		{name: "valid", header: header("v0="+good, ts), body: testBody, now: testTime},
		{name: "uppercase hex", header: header("v0="+strings.ToUpper(good), ts), body: testBody, now: testTime},
		invalid("no prefix", good, ts, verify.ErrMalformedHeader),
		invalid("v1 prefix", "v1="+good, ts, verify.ErrMalformedHeader),
		invalid("short digest", "v0="+good[:40], ts, verify.ErrMalformedHeader),
		invalid("two signatures", "v0="+good+",v0="+good, ts, verify.ErrMalformedHeader),
		invalid("timestamp not a number", "v0="+good, "abc", verify.ErrMalformedHeader),
		invalid("timestamp with fraction", "v0="+good, ts+".5", verify.ErrMalformedHeader),
		invalid("timestamp negative", "v0="+good, "-"+ts, verify.ErrMalformedHeader),
		invalid("timestamp with space", "v0="+good, " "+ts, verify.ErrMalformedHeader),
		invalid("timestamp too many digits", "v0="+good, "1234567890123456789", verify.ErrMalformedHeader),
		invalid("timestamp differs from signed", "v0="+good, "1700000001", verify.ErrMismatch),
		invalid("timestamp with leading zero", "v0="+good, "0"+ts, verify.ErrMismatch),
	})
}

func TestStandardHeaderForms(t *testing.T) {
	key := []byte("placeholder-standard-key")
	secret := []byte("whsec_" + base64.StdEncoding.EncodeToString(key))
	v := mustNew(t, verify.KindStandard, [][]byte{secret}, verify.Options{})
	const id, ts = "msg_placeholder", "1700000000"
	good := base64.StdEncoding.EncodeToString(hmacSHA256(key, id+"."+ts+".", string(testBody)))
	bad := base64.StdEncoding.EncodeToString(hmacSHA256([]byte("other-key"), id+"."+ts+".", string(testBody)))
	header := func(signature string) http.Header {
		return http.Header{"Webhook-Id": {id}, "Webhook-Timestamp": {ts}, "Webhook-Signature": {signature}}
	}
	valid := func(name, signature string) verifyCase {
		return verifyCase{name: name, header: header(signature), body: testBody, now: testTime}
	}
	invalid := func(name, signature string, want error) verifyCase {
		return verifyCase{name: name, header: header(signature), body: testBody, now: testTime, want: want}
	}
	svix := http.Header{"Svix-Id": {id}, "Svix-Timestamp": {ts}, "Svix-Signature": {"v1," + good}}
	mixed := http.Header{"Webhook-Id": {id}, "Svix-Timestamp": {ts}, "Svix-Signature": {"v1," + good}}

	runCases(t, v, []verifyCase{
		valid("valid", "v1,"+good),
		valid("valid among several", "v1a,"+bad+" v2,"+good+" v1,"+bad+" v1,"+good),
		valid("extra spaces", "  v1,"+bad+"   v1,"+good+"  "),
		valid("entry without comma skipped", "v1"+good+" v1,"+good),
		valid("bad base64 entry skipped", "v1,!!!! v1,"+good),
		valid("valid as 16th entry", strings.Repeat("v1,"+bad+" ", 15)+"v1,"+good),
		invalid("valid after 16 entries ignored", strings.Repeat("v1,"+bad+" ", 16)+"v1,"+good, verify.ErrMismatch),
		invalid("only v2", "v2,"+good, verify.ErrMalformedHeader),
		invalid("only v1a", "v1a,"+good, verify.ErrMalformedHeader),
		invalid("no comma", "v1"+good, verify.ErrMalformedHeader),
		invalid("hex digest", "v1,"+hex.EncodeToString(hmacSHA256(key, id+"."+ts+".", string(testBody))), verify.ErrMalformedHeader),
		invalid("no padding", "v1,"+strings.TrimRight(good, "="), verify.ErrMalformedHeader),
		invalid("non-zero padding bits", "v1,"+setPaddingBits(good), verify.ErrMalformedHeader),
		invalid("only spaces", "   ", verify.ErrMalformedHeader),
		invalid("only a wrong v1", "v1,"+bad, verify.ErrMismatch),
		{name: "svix headers", header: svix, body: testBody, now: testTime},
		{name: "mixed header sets", header: mixed, body: testBody, now: testTime, want: verify.ErrMissingHeader},
		{name: "id differs from signed", header: withHeader(header("v1,"+good), "Webhook-Id", "msg_other"), body: testBody, now: testTime, want: verify.ErrMismatch},
		{name: "timestamp differs from signed", header: withHeader(header("v1,"+good), "Webhook-Timestamp", "1700000001"), body: testBody, now: testTime, want: verify.ErrMismatch},
		{name: "timestamp not a number", header: withHeader(header("v1,"+good), "Webhook-Timestamp", "abc"), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "timestamp in milliseconds", header: withHeader(header("v1,"+good), "Webhook-Timestamp", "1700000000000"), body: testBody, now: testTime, want: verify.ErrMismatch},
	})
}

func TestStandardSecretWithoutPrefix(t *testing.T) {
	key := []byte("placeholder-standard-key")
	encoded := base64.StdEncoding.EncodeToString(key)
	header := mustSign(t, verify.KindStandard, []byte("whsec_"+encoded), testBody, testTime, verify.Options{ID: "msg_1"})

	v := mustNew(t, verify.KindStandard, [][]byte{[]byte(encoded)}, verify.Options{})
	err := v.Verify(verify.Request{Header: header, Body: testBody}, testTime)
	checkVerifyError(t, err, nil)
}

func TestHMACHeaderForms(t *testing.T) {
	secret := []byte("placeholder-hmac-secret")
	v := mustNew(t, verify.KindHMAC, [][]byte{secret}, verify.Options{Header: "x-sig", Algorithm: "sha256", Prefix: "sha256="})
	digest := hex.EncodeToString(hmacSHA256(secret, string(testBody)))
	header := func(value string) http.Header {
		return http.Header{"X-Sig": {value}}
	}

	runCases(t, v, []verifyCase{
		{name: "valid", header: header("sha256=" + digest), body: testBody, now: testTime},
		{name: "no prefix", header: header(digest), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "digest of other length", header: header("sha256=" + digest[:40]), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "base64 digest", header: header("sha256=" + base64.StdEncoding.EncodeToString(hmacSHA256(secret, string(testBody)))), body: testBody, now: testTime, want: verify.ErrMalformedHeader},
		{name: "other header", header: http.Header{"X-Signature": {"sha256=" + digest}}, body: testBody, now: testTime, want: verify.ErrMissingHeader},
	})
}

func TestVerifyReadsFirstHeaderValue(t *testing.T) {
	secret := []byte("placeholder-github-secret")
	v := mustNew(t, verify.KindGitHub, [][]byte{secret}, verify.Options{})
	good := "sha256=" + hex.EncodeToString(hmacSHA256(secret, string(testBody)))
	bad := "sha256=" + strings.Repeat("0", 64)

	runCases(t, v, []verifyCase{
		{name: "valid first", header: http.Header{"X-Hub-Signature-256": {good, bad}}, body: testBody, now: testTime},
		{name: "valid second", header: http.Header{"X-Hub-Signature-256": {bad, good}}, body: testBody, now: testTime, want: verify.ErrMismatch},
	})
}

func TestNoneAcceptsEverything(t *testing.T) {
	v := mustNew(t, verify.KindNone, nil, verify.Options{})
	if err := v.Verify(verify.Request{}, time.Time{}); err != nil {
		t.Errorf("Verify of empty request = %v, want nil", err)
	}
	header := http.Header{"X-Hub-Signature-256": {"sha256=invalid"}}
	if err := v.Verify(verify.Request{Header: header, Body: testBody}, testTime); err != nil {
		t.Errorf("Verify with a bad signature header = %v, want nil", err)
	}
}

// TestErrorsHideSecretsAndSignatures checks that no failure message
// contains a secret or the signature the verifier expected.
func TestErrorsHideSecretsAndSignatures(t *testing.T) {
	for _, config := range kindConfigs {
		t.Run(config.name, func(t *testing.T) {
			secret, _, otherSecret := testSecrets(config.kind)
			v := mustNew(t, config.kind, [][]byte{secret}, config.opts)
			expected := mustSign(t, config.kind, secret, testBody, testTime, config.opts)
			received := mustSign(t, config.kind, otherSecret, testBody, testTime, config.opts)

			requests := []http.Header{received, withHeader(received, config.headers[0], "x"), nil}
			for _, header := range requests {
				err := v.Verify(verify.Request{Header: header, Body: testBody}, testTime)
				if err == nil {
					t.Fatal("Verify = nil, want an error")
				}
				message := err.Error()
				if strings.Contains(message, string(secret)) {
					t.Errorf("error %q contains the secret", message)
				}
				signature := expected.Get(config.headers[0])
				if strings.Contains(message, signature) {
					t.Errorf("error %q contains the expected signature", message)
				}
			}
		})
	}
}

func TestNewRejectsInvalidConfig(t *testing.T) {
	secret := [][]byte{[]byte("placeholder-secret")}
	hmacOpts := verify.Options{Header: "X-Signature"}
	tests := []struct {
		name    string
		kind    string
		secrets [][]byte
		opts    verify.Options
		// wantText must occur in the error message.
		wantText string
	}{
		{name: "unknown kind", kind: "gitlab", secrets: secret, wantText: "none, github, stripe, slack, shopify, standard, hmac"},
		{name: "kind in wrong case", kind: "GitHub", secrets: secret, wantText: "unknown verifier kind"},
		{name: "empty kind", kind: "", secrets: secret, wantText: "unknown verifier kind"},
		{name: "no secrets", kind: verify.KindGitHub, secrets: nil, wantText: "requires at least one secret"},
		{name: "empty secret", kind: verify.KindStripe, secrets: [][]byte{[]byte("a"), {}}, wantText: "secret 2 of 2"},
		{name: "none with secret", kind: verify.KindNone, secrets: secret, wantText: "takes no secrets"},
		{name: "negative tolerance", kind: verify.KindSlack, secrets: secret, opts: verify.Options{Tolerance: -time.Second}, wantText: "negative"},
		{name: "standard secret not base64", kind: verify.KindStandard, secrets: [][]byte{[]byte("whsec_not*base64")}, wantText: "base64"},
		{name: "standard secret only prefix", kind: verify.KindStandard, secrets: [][]byte{[]byte("whsec_")}, wantText: "empty key"},
		{name: "hmac without header", kind: verify.KindHMAC, secrets: secret, wantText: "requires the Header option"},
		{name: "hmac header with space", kind: verify.KindHMAC, secrets: secret, opts: verify.Options{Header: "X Signature"}, wantText: "not a valid HTTP header name"},
		{name: "hmac header with colon", kind: verify.KindHMAC, secrets: secret, opts: verify.Options{Header: "X-Signature:"}, wantText: "not a valid HTTP header name"},
		{name: "hmac md5", kind: verify.KindHMAC, secrets: secret, opts: verify.Options{Header: "X-Signature", Algorithm: "md5"}, wantText: "sha1, sha256 or sha512"},
		{name: "hmac algorithm in upper case", kind: verify.KindHMAC, secrets: secret, opts: verify.Options{Header: "X-Signature", Algorithm: "SHA256"}, wantText: "not supported"},
		{name: "hmac base32", kind: verify.KindHMAC, secrets: secret, opts: verify.Options{Header: "X-Signature", Encoding: "base32"}, wantText: "hex or base64"},
		{name: "hmac prefix with newline", kind: verify.KindHMAC, secrets: secret, opts: verify.Options{Header: "X-Signature", Prefix: "a\n"}, wantText: "printable ASCII"},
		{name: "hmac prefix too long", kind: verify.KindHMAC, secrets: secret, opts: verify.Options{Header: "X-Signature", Prefix: strings.Repeat("a", 65)}, wantText: "maximum"},
		{name: "hmac options on github", kind: verify.KindGitHub, secrets: secret, opts: hmacOpts, wantText: "apply only to kind"},
		{name: "hmac options on none", kind: verify.KindNone, opts: verify.Options{Prefix: "v0="}, wantText: "apply only to kind"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := verify.New(tc.kind, tc.secrets, tc.opts)
			if err == nil {
				t.Fatalf("New = %v, nil; want an error", v)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("New error = %q, want it to contain %q", err, tc.wantText)
			}
			for _, secret := range tc.secrets {
				if len(secret) > 6 && strings.Contains(err.Error(), string(secret)) {
					t.Errorf("New error %q contains a secret", err)
				}
			}

			if _, err := verify.Sign(tc.kind, firstOrNil(tc.secrets), testBody, testTime, tc.opts); err == nil && tc.name != "empty secret" {
				t.Errorf("Sign accepted the configuration that New rejects")
			}
		})
	}
}

func firstOrNil(secrets [][]byte) []byte {
	if len(secrets) == 0 {
		return nil
	}
	return secrets[0]
}

func TestNewCopiesSecrets(t *testing.T) {
	secret := []byte("placeholder-github-secret")
	v := mustNew(t, verify.KindGitHub, [][]byte{secret}, verify.Options{})
	header := mustSign(t, verify.KindGitHub, secret, testBody, testTime, verify.Options{})

	secret[0] ^= 0xff
	err := v.Verify(verify.Request{Header: header, Body: testBody}, testTime)
	checkVerifyError(t, err, nil)
}

func TestKindNames(t *testing.T) {
	names := verify.KindNames()
	want := []string{"none", "github", "stripe", "slack", "shopify", "standard", "hmac"}
	if !slices.Equal(names, want) {
		t.Fatalf("KindNames = %v, want %v", names, want)
	}

	names[0] = "changed"
	if got := verify.KindNames()[0]; got != "none" {
		t.Errorf("KindNames()[0] = %q after the caller changed its copy, want none", got)
	}
}

func TestKindReturnsKindName(t *testing.T) {
	for _, config := range append(kindConfigs, kindConfig{name: "none", kind: verify.KindNone}) {
		t.Run(config.name, func(t *testing.T) {
			var secrets [][]byte
			if config.kind != verify.KindNone {
				_, secret, _ := testSecrets(config.kind)
				secrets = [][]byte{secret}
			}
			v := mustNew(t, config.kind, secrets, config.opts)
			if got := v.Kind(); got != config.kind {
				t.Errorf("Kind = %q, want %q", got, config.kind)
			}
		})
	}
}

func TestSignVerifyRoundTrip(t *testing.T) {
	bodies := map[string][]byte{
		"json":   testBody,
		"empty":  {},
		"binary": {0x00, 0xff, 0x0a, 0x0d, 0x2e, 0x3a},
	}
	for _, config := range kindConfigs {
		for bodyName, body := range bodies {
			t.Run(config.name+"/"+bodyName, func(t *testing.T) {
				_, secret, _ := testSecrets(config.kind)
				header := mustSign(t, config.kind, secret, body, testTime, config.opts)
				for _, name := range config.headers {
					if header.Get(name) == "" {
						t.Errorf("Sign did not set %s", name)
					}
				}
				v := mustNew(t, config.kind, [][]byte{secret}, config.opts)
				err := v.Verify(verify.Request{Header: header, Body: body}, testTime)
				checkVerifyError(t, err, nil)
			})
		}
	}
}

func TestSignNone(t *testing.T) {
	header := mustSign(t, verify.KindNone, nil, testBody, testTime, verify.Options{})
	if len(header) != 0 {
		t.Errorf("Sign(none) = %v, want an empty header", header)
	}
	if _, err := verify.Sign(verify.KindNone, []byte("secret"), testBody, testTime, verify.Options{}); err == nil {
		t.Error("Sign(none) with a secret = nil error, want an error")
	}
}

func TestSignStandardID(t *testing.T) {
	_, secret, _ := testSecrets(verify.KindStandard)

	fixed := mustSign(t, verify.KindStandard, secret, testBody, testTime, verify.Options{ID: "msg_fixed"})
	if got := fixed.Get("Webhook-Id"); got != "msg_fixed" {
		t.Errorf("Webhook-Id = %q, want msg_fixed", got)
	}

	first := mustSign(t, verify.KindStandard, secret, testBody, testTime, verify.Options{}).Get("Webhook-Id")
	second := mustSign(t, verify.KindStandard, secret, testBody, testTime, verify.Options{}).Get("Webhook-Id")
	if !strings.HasPrefix(first, "msg_") || len(first) < 20 {
		t.Errorf("generated Webhook-Id = %q, want msg_ and a random suffix", first)
	}
	if first == second {
		t.Errorf("two generated Webhook-Id values are both %q", first)
	}

	for _, id := range []string{"msg 1", "msg\r\n1", strings.Repeat("a", 5000)} {
		if _, err := verify.Sign(verify.KindStandard, secret, testBody, testTime, verify.Options{ID: id}); err == nil {
			t.Errorf("Sign with ID %q = nil error, want an error", id)
		}
	}
}

func TestSignRejectsTimeBefore1970(t *testing.T) {
	_, err := verify.Sign(verify.KindStripe, []byte("whsec_x"), testBody, time.Unix(-1, 0), verify.Options{})
	if err == nil {
		t.Fatal("Sign before 1970 = nil error, want an error")
	}
}

func TestSignHeaderFormats(t *testing.T) {
	tests := []struct {
		kind    string
		secret  string
		opts    verify.Options
		header  string
		pattern func(string) bool
	}{
		{kind: verify.KindGitHub, secret: "s", header: "X-Hub-Signature-256", pattern: func(v string) bool {
			return strings.HasPrefix(v, "sha256=") && len(v) == 7+64
		}},
		{kind: verify.KindStripe, secret: "whsec_s", header: "Stripe-Signature", pattern: func(v string) bool {
			return strings.HasPrefix(v, "t=1700000000,v1=") && len(v) == 16+64
		}},
		{kind: verify.KindSlack, secret: "s", header: "X-Slack-Signature", pattern: func(v string) bool {
			return strings.HasPrefix(v, "v0=") && len(v) == 3+64
		}},
		{kind: verify.KindShopify, secret: "s", header: "X-Shopify-Hmac-Sha256", pattern: func(v string) bool {
			return len(v) == 44 && strings.HasSuffix(v, "=")
		}},
		{kind: verify.KindHMAC, secret: "s", opts: verify.Options{Header: "X-Sig", Algorithm: "sha512", Encoding: "base64", Prefix: "sha512="}, header: "X-Sig", pattern: func(v string) bool {
			return strings.HasPrefix(v, "sha512=") && len(v) == 7+88
		}},
	}
	for _, tc := range tests {
		t.Run(tc.kind, func(t *testing.T) {
			header := mustSign(t, tc.kind, []byte(tc.secret), testBody, testTime, tc.opts)
			if value := header.Get(tc.header); !tc.pattern(value) {
				t.Errorf("%s = %q has the wrong form", tc.header, value)
			}
		})
	}
}
