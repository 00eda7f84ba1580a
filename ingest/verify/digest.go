package verify

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"hash"
	"net/http"
	"strings"
	"time"
)

// Header names of the single-digest schemes.
const (
	headerGitHubSignature = "X-Hub-Signature-256"
	headerShopifyHMAC     = "X-Shopify-Hmac-Sha256"
)

const (
	encodingHex    = "hex"
	encodingBase64 = "base64"

	// maxPrefixLength bounds Options.Prefix for kind "hmac".
	maxPrefixLength = 64
	// maxHeaderNameLength bounds Options.Header for kind "hmac".
	maxHeaderNameLength = 256
)

// digestScheme describes a header that carries one HMAC of the raw body,
// optionally after a fixed prefix. GitHub, Shopify and the generic "hmac"
// kind all have this form.
type digestScheme struct {
	header  string
	prefix  string
	newHash func() hash.Hash
	size    int
	base64  bool
}

// digestSchemeFor returns the scheme of a single-digest kind. For kind
// "hmac" it validates and applies opts.
func digestSchemeFor(kind string, opts Options) (digestScheme, error) {
	switch kind {
	case KindGitHub:
		return digestScheme{header: headerGitHubSignature, prefix: "sha256=", newHash: sha256.New, size: sha256.Size}, nil
	case KindShopify:
		return digestScheme{header: headerShopifyHMAC, newHash: sha256.New, size: sha256.Size, base64: true}, nil
	case KindHMAC:
		return genericScheme(opts)
	default:
		return digestScheme{}, fmt.Errorf("verify: kind %q is not a single-digest kind", kind)
	}
}

// genericScheme validates the options of kind "hmac" and returns its scheme.
func genericScheme(opts Options) (digestScheme, error) {
	if opts.Header == "" {
		return digestScheme{}, fmt.Errorf("verify: kind %q requires the Header option, the name of the signature header", KindHMAC)
	}
	if !validHeaderName(opts.Header) {
		return digestScheme{}, fmt.Errorf("verify: Header %q is not a valid HTTP header name", opts.Header)
	}

	scheme := digestScheme{header: http.CanonicalHeaderKey(opts.Header)}

	switch opts.Algorithm {
	case "sha1":
		scheme.newHash, scheme.size = sha1.New, sha1.Size
	case "sha256", "":
		scheme.newHash, scheme.size = sha256.New, sha256.Size
	case "sha512":
		scheme.newHash, scheme.size = sha512.New, sha512.Size
	default:
		return digestScheme{}, fmt.Errorf("verify: Algorithm %q is not supported, use sha1, sha256 or sha512", opts.Algorithm)
	}

	switch opts.Encoding {
	case encodingHex, "":
		scheme.base64 = false
	case encodingBase64:
		scheme.base64 = true
	default:
		return digestScheme{}, fmt.Errorf("verify: Encoding %q is not supported, use hex or base64", opts.Encoding)
	}

	if len(opts.Prefix) > maxPrefixLength {
		return digestScheme{}, fmt.Errorf("verify: Prefix is %d bytes, longer than the maximum of %d", len(opts.Prefix), maxPrefixLength)
	}
	for i := 0; i < len(opts.Prefix); i++ {
		if opts.Prefix[i] < 0x21 || opts.Prefix[i] > 0x7e {
			return digestScheme{}, fmt.Errorf("verify: Prefix %q must contain only printable ASCII characters other than space", opts.Prefix)
		}
	}
	scheme.prefix = opts.Prefix

	return scheme, nil
}

// validHeaderName reports whether name is an RFC 9110 token of reasonable
// length, which is what an HTTP field name must be.
func validHeaderName(name string) bool {
	if name == "" || len(name) > maxHeaderNameLength {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		isAlphanumeric := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !isAlphanumeric && !strings.ContainsRune("!#$%&'*+-.^_`|~", rune(c)) {
			return false
		}
	}
	return true
}

// parse extracts the received digest from a header value.
func (s digestScheme) parse(value string) ([]byte, error) {
	encoded, found := strings.CutPrefix(value, s.prefix)
	if !found {
		return nil, fmt.Errorf("%w: %s does not start with %q", ErrMalformedHeader, s.header, s.prefix)
	}

	var digest []byte
	var ok bool
	if s.base64 {
		digest, ok = decodeBase64Digest(encoded, s.size)
	} else {
		digest, ok = decodeHexDigest(encoded, s.size)
	}
	if !ok {
		return nil, fmt.Errorf("%w: %s must contain a %d-byte digest encoded as %s", ErrMalformedHeader, s.header, s.size, s.encodingName())
	}
	return digest, nil
}

// sign returns the header that carries the HMAC of body under key.
func (s digestScheme) sign(key, body []byte) http.Header {
	mac := computeMAC(s.newHash, key, body)
	var encoded string
	if s.base64 {
		encoded = strictBase64.EncodeToString(mac)
	} else {
		encoded = hex.EncodeToString(mac)
	}

	header := http.Header{}
	header.Set(s.header, s.prefix+encoded)
	return header
}

func (s digestScheme) encodingName() string {
	if s.base64 {
		return encodingBase64
	}
	return encodingHex
}

// digestVerifier verifies the kinds github, shopify and hmac.
type digestVerifier struct {
	kind   string
	scheme digestScheme
	keys   [][]byte
}

func (v *digestVerifier) Kind() string { return v.kind }

func (v *digestVerifier) Verify(req Request, _ time.Time) error {
	value, err := headerValue(req.Header, v.scheme.header)
	if err != nil {
		return err
	}
	signature, err := v.scheme.parse(value)
	if err != nil {
		return err
	}
	if !matchAny(v.scheme.newHash, v.keys, [][]byte{signature}, req.Body) {
		return fmt.Errorf("%w: %s does not match the body with any configured secret (%d)", ErrMismatch, v.scheme.header, len(v.keys))
	}
	return nil
}
