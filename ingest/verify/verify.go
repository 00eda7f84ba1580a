package verify

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// Request is the header and raw body of one incoming HTTP request.
type Request struct {
	// Header is the request header with canonical keys, as net/http stores them.
	// Verifiers look headers up with [http.Header.Get], so only the first
	// value of a repeated header is read.
	Header http.Header
	// Body is the raw request body, byte for byte as received.
	Body []byte
}

// Verifier checks the signature of one kind of webhook sender.
// A Verifier is immutable after [New] and safe for concurrent use.
type Verifier interface {
	// Verify returns nil when req carries a valid signature made with one of
	// the configured secrets, and when the signed timestamp (for schemes that
	// have one) is within the tolerance of now. Otherwise it returns an error
	// wrapping ErrMissingHeader, ErrMalformedHeader, ErrStaleTimestamp or
	// ErrMismatch. ErrStaleTimestamp is returned only when the signature
	// itself matches, so it points at a replay or at clock skew.
	Verify(req Request, now time.Time) error
	// Kind returns the kind name the verifier was built for, such as "github".
	Kind() string
}

// Reasons for a failed verification. Verify wraps exactly one of them.
var (
	ErrMissingHeader   = errors.New("verify: missing signature header")
	ErrMalformedHeader = errors.New("verify: malformed signature header")
	ErrStaleTimestamp  = errors.New("verify: timestamp outside tolerance")
	ErrMismatch        = errors.New("verify: signature mismatch")
)

// Verifier kind names accepted by [New] and [Sign].
const (
	KindNone     = "none"
	KindGitHub   = "github"
	KindStripe   = "stripe"
	KindSlack    = "slack"
	KindShopify  = "shopify"
	KindStandard = "standard"
	KindHMAC     = "hmac"
)

// DefaultTolerance is the maximum distance between a signed timestamp and the
// current time, in either direction, when [Options.Tolerance] is zero.
const DefaultTolerance = 5 * time.Minute

// kindNames lists every kind in the order used by KindNames and error text.
var kindNames = []string{KindNone, KindGitHub, KindStripe, KindSlack, KindShopify, KindStandard, KindHMAC}

// KindNames returns the valid verifier kind names, for configuration checks
// and help text. The caller may modify the returned slice.
func KindNames() []string {
	return append([]string(nil), kindNames...)
}

// Options tunes a verifier. The zero value suits every kind except "hmac",
// which needs at least Header.
type Options struct {
	// Tolerance is the maximum distance between the signed timestamp and the
	// current time, applied both to the past and to the future, for the kinds
	// stripe, slack and standard. Zero means DefaultTolerance. Timestamps have
	// a resolution of one second, so a fraction of a second is dropped.
	// Other kinds ignore it.
	Tolerance time.Duration

	// Header is the signature header name for kind "hmac" (required).
	Header string
	// Algorithm is the hash for kind "hmac": "sha1", "sha256" (the default
	// when empty) or "sha512".
	Algorithm string
	// Encoding is the signature encoding for kind "hmac": "hex" (the default
	// when empty) or "base64" (standard alphabet, padded).
	Encoding string
	// Prefix is text that precedes the encoded signature in the header for
	// kind "hmac", such as "sha1=". Empty means none.
	Prefix string

	// ID is the webhook-id value that Sign sends for kind "standard". When it
	// is empty, Sign generates a random "msg_" id. New ignores it.
	ID string
}

// New returns the verifier of the given kind.
//
// Secrets are tried in turn, so an old and a new secret can both be accepted
// while a sender rotates. Every kind except "none" requires at least one
// non-empty secret, and "none" accepts no secret. New copies the secrets.
// For kind "standard" each secret is base64 after an optional "whsec_"
// prefix, and New decodes it. The options Header, Algorithm, Encoding and
// Prefix are valid only for kind "hmac". An unknown kind is an error that
// lists the valid kinds.
func New(kind string, secrets [][]byte, opts Options) (Verifier, error) {
	if err := validateOptions(kind, opts); err != nil {
		return nil, err
	}
	keys, err := prepareKeys(kind, secrets)
	if err != nil {
		return nil, err
	}

	tolerance := opts.Tolerance
	if tolerance == 0 {
		tolerance = DefaultTolerance
	}

	switch kind {
	case KindNone:
		return noneVerifier{}, nil
	case KindStripe:
		return &stripeVerifier{keys: keys, tolerance: tolerance}, nil
	case KindSlack:
		return &slackVerifier{keys: keys, tolerance: tolerance}, nil
	case KindStandard:
		return &standardVerifier{keys: keys, tolerance: tolerance}, nil
	default:
		scheme, err := digestSchemeFor(kind, opts)
		if err != nil {
			return nil, err
		}
		return &digestVerifier{kind: kind, scheme: scheme, keys: keys}, nil
	}
}

// Sign returns the headers that a sender of the given kind attaches to body
// when it signs with secret at time now. It validates kind, secret and opts
// as [New] does. For kind "none" it returns an empty header. The result is
// meant for tests and for tools that send signed sample deliveries.
func Sign(kind string, secret []byte, body []byte, now time.Time, opts Options) (http.Header, error) {
	if err := validateOptions(kind, opts); err != nil {
		return nil, err
	}
	var secrets [][]byte
	if len(secret) > 0 || kind != KindNone {
		secrets = [][]byte{secret}
	}
	keys, err := prepareKeys(kind, secrets)
	if err != nil {
		return nil, err
	}

	unix := now.Unix()
	if unix < 0 {
		return nil, fmt.Errorf("verify: cannot sign at %s because signed timestamps must not be before 1970", now.UTC().Format(time.RFC3339))
	}

	switch kind {
	case KindNone:
		return http.Header{}, nil
	case KindStripe:
		return signStripe(keys[0], body, unix), nil
	case KindSlack:
		return signSlack(keys[0], body, unix), nil
	case KindStandard:
		return signStandard(keys[0], body, unix, opts.ID)
	default:
		scheme, err := digestSchemeFor(kind, opts)
		if err != nil {
			return nil, err
		}
		return scheme.sign(keys[0], body), nil
	}
}

// validateOptions checks that kind is known and that opts fit it.
func validateOptions(kind string, opts Options) error {
	known := false
	for _, name := range kindNames {
		if kind == name {
			known = true
			break
		}
	}
	if !known {
		return fmt.Errorf("verify: unknown verifier kind %q, valid kinds are %s", kind, strings.Join(kindNames, ", "))
	}

	if opts.Tolerance < 0 {
		return fmt.Errorf("verify: tolerance must not be negative, got %s", opts.Tolerance)
	}

	hmacOnly := opts.Header != "" || opts.Algorithm != "" || opts.Encoding != "" || opts.Prefix != ""
	if hmacOnly && kind != KindHMAC {
		return fmt.Errorf("verify: options Header, Algorithm, Encoding and Prefix apply only to kind %q, not to %q", KindHMAC, kind)
	}
	return nil
}

// prepareKeys checks the secrets for kind and returns the HMAC keys derived
// from them, as copies. Error text never contains a secret.
func prepareKeys(kind string, secrets [][]byte) ([][]byte, error) {
	if kind == KindNone {
		if len(secrets) > 0 {
			return nil, fmt.Errorf("verify: kind %q takes no secrets, got %d", KindNone, len(secrets))
		}
		return nil, nil
	}
	if len(secrets) == 0 {
		return nil, fmt.Errorf("verify: kind %q requires at least one secret", kind)
	}

	keys := make([][]byte, 0, len(secrets))
	for i, secret := range secrets {
		if len(secret) == 0 {
			return nil, fmt.Errorf("verify: secret %d of %d for kind %q is empty", i+1, len(secrets), kind)
		}
		if kind == KindStandard {
			key, err := decodeStandardSecret(secret)
			if err != nil {
				return nil, fmt.Errorf("verify: secret %d of %d for kind %q: %w", i+1, len(secrets), kind, err)
			}
			keys = append(keys, key)
			continue
		}
		keys = append(keys, append([]byte(nil), secret...))
	}
	return keys, nil
}

// noneVerifier accepts every request. Callers should log such requests as
// unverified.
type noneVerifier struct{}

func (noneVerifier) Verify(Request, time.Time) error { return nil }

func (noneVerifier) Kind() string { return KindNone }
