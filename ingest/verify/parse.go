package verify

import (
	"crypto/hmac"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"time"
)

const (
	// maxHeaderLength is the longest header value a verifier reads. Longer
	// values are rejected as malformed. Real signature headers are far
	// shorter: a Stripe-Signature with five v1 entries is under 400 bytes.
	maxHeaderLength = 4096
	// maxEntries is how many entries of a multi-signature header are read.
	// Entries after it are ignored.
	maxEntries = 16
	// maxTimestampDigits keeps parsed Unix seconds well inside int64, so
	// the tolerance arithmetic cannot overflow.
	maxTimestampDigits = 18
)

// strictBase64 rejects encodings with non-zero padding bits, so that exactly
// one header string decodes to each signature.
var strictBase64 = base64.StdEncoding.Strict()

// headerValue returns the first value of the named header. An absent or
// empty header is ErrMissingHeader, and a value longer than maxHeaderLength
// is ErrMalformedHeader.
func headerValue(header http.Header, name string) (string, error) {
	value := header.Get(name)
	if value == "" {
		return "", fmt.Errorf("%w: %s", ErrMissingHeader, name)
	}
	if len(value) > maxHeaderLength {
		return "", fmt.Errorf("%w: %s is %d bytes, longer than the maximum of %d", ErrMalformedHeader, name, len(value), maxHeaderLength)
	}
	return value, nil
}

// parseUnixSeconds parses a signed timestamp: 1 to maxTimestampDigits ASCII
// digits, with no sign, space or fraction.
func parseUnixSeconds(text string) (int64, bool) {
	if len(text) == 0 || len(text) > maxTimestampDigits {
		return 0, false
	}
	for i := 0; i < len(text); i++ {
		if text[i] < '0' || text[i] > '9' {
			return 0, false
		}
	}
	seconds, err := strconv.ParseInt(text, 10, 64)
	if err != nil {
		return 0, false
	}
	return seconds, true
}

// checkTimestamp returns ErrStaleTimestamp when the signed Unix time is
// further than tolerance from now, in the past or in the future.
func checkTimestamp(signed int64, now time.Time, tolerance time.Duration) error {
	// Both values are at most about 10^18 in magnitude, so neither the
	// difference nor its negation overflows int64.
	skew := now.Unix() - signed
	limit := int64(tolerance / time.Second)
	if skew > limit || -skew > limit {
		return fmt.Errorf("%w: signed at %d, %d seconds from the current time %d, tolerance %s",
			ErrStaleTimestamp, signed, skew, now.Unix(), tolerance)
	}
	return nil
}

// decodeHexDigest decodes text as exactly size bytes of hex, in either case.
func decodeHexDigest(text string, size int) ([]byte, bool) {
	if len(text) != hex.EncodedLen(size) {
		return nil, false
	}
	digest, err := hex.DecodeString(text)
	if err != nil {
		return nil, false
	}
	return digest, true
}

// decodeBase64Digest decodes text as exactly size bytes of padded standard
// base64.
func decodeBase64Digest(text string, size int) ([]byte, bool) {
	if len(text) != strictBase64.EncodedLen(size) {
		return nil, false
	}
	digest, err := strictBase64.DecodeString(text)
	if err != nil || len(digest) != size {
		return nil, false
	}
	return digest, true
}

// computeMAC returns the HMAC of the concatenated parts under key.
func computeMAC(newHash func() hash.Hash, key []byte, parts ...[]byte) []byte {
	mac := hmac.New(newHash, key)
	for _, part := range parts {
		mac.Write(part)
	}
	return mac.Sum(nil)
}

// matchAny reports whether any received signature equals the HMAC of the
// concatenated parts under any key. It compares every pair with hmac.Equal
// and does not stop at the first match, so its running time does not reveal
// which secret or which entry matched.
func matchAny(newHash func() hash.Hash, keys [][]byte, signatures [][]byte, parts ...[]byte) bool {
	matched := false
	for _, key := range keys {
		expected := computeMAC(newHash, key, parts...)
		for _, signature := range signatures {
			if hmac.Equal(expected, signature) {
				matched = true
			}
		}
	}
	return matched
}
