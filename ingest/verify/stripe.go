package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

const headerStripeSignature = "Stripe-Signature"

// stripeSignature is the parsed content of a Stripe-Signature header.
type stripeSignature struct {
	// timestamp is the t value as sent, which is also the signed text.
	timestamp string
	unix      int64
	// v1 holds the decoded v1 signatures, at most maxEntries of them.
	v1 [][]byte
}

// parseStripeSignature parses "t=<unix>,v1=<hex>[,v1=<hex>...]". It reads at
// most maxEntries comma-separated entries and skips empty entries, schemes
// other than t and v1 (such as v0), and v1 values that are not 32 bytes of
// hex. A header without exactly one valid t, or without any usable v1, is
// malformed.
func parseStripeSignature(value string) (stripeSignature, error) {
	var parsed stripeSignature
	haveTimestamp := false

	rest := value
	for entries := 0; entries < maxEntries && rest != ""; entries++ {
		var entry string
		entry, rest, _ = strings.Cut(rest, ",")
		entry = strings.TrimSpace(entry)
		if entry == "" {
			continue
		}

		scheme, text, found := strings.Cut(entry, "=")
		if !found {
			return stripeSignature{}, fmt.Errorf("%w: %s entry %d has no '='", ErrMalformedHeader, headerStripeSignature, entries+1)
		}

		switch scheme {
		case "t":
			if haveTimestamp {
				return stripeSignature{}, fmt.Errorf("%w: %s has more than one t entry", ErrMalformedHeader, headerStripeSignature)
			}
			unix, ok := parseUnixSeconds(text)
			if !ok {
				return stripeSignature{}, fmt.Errorf("%w: %s t must be Unix seconds in decimal digits", ErrMalformedHeader, headerStripeSignature)
			}
			parsed.timestamp, parsed.unix, haveTimestamp = text, unix, true
		case "v1":
			if signature, ok := decodeHexDigest(text, sha256.Size); ok {
				parsed.v1 = append(parsed.v1, signature)
			}
		}
	}

	if !haveTimestamp {
		return stripeSignature{}, fmt.Errorf("%w: %s has no t entry", ErrMalformedHeader, headerStripeSignature)
	}
	if len(parsed.v1) == 0 {
		return stripeSignature{}, fmt.Errorf("%w: %s has no v1 signature of 64 hex digits", ErrMalformedHeader, headerStripeSignature)
	}
	return parsed, nil
}

// stripeVerifier verifies Stripe-Signature. Stripe signs "<t>.<body>" with
// HMAC-SHA256 and uses the endpoint secret, "whsec_" prefix included, as the
// key bytes.
type stripeVerifier struct {
	keys      [][]byte
	tolerance time.Duration
}

func (v *stripeVerifier) Kind() string { return KindStripe }

func (v *stripeVerifier) Verify(req Request, now time.Time) error {
	value, err := headerValue(req.Header, headerStripeSignature)
	if err != nil {
		return err
	}
	parsed, err := parseStripeSignature(value)
	if err != nil {
		return err
	}

	if !matchAny(sha256.New, v.keys, parsed.v1, []byte(parsed.timestamp), []byte("."), req.Body) {
		return fmt.Errorf("%w: none of %d v1 signatures in %s matches with any configured secret (%d)",
			ErrMismatch, len(parsed.v1), headerStripeSignature, len(v.keys))
	}
	return checkTimestamp(parsed.unix, now, v.tolerance)
}

func signStripe(key, body []byte, unix int64) http.Header {
	timestamp := strconv.FormatInt(unix, 10)
	mac := computeMAC(sha256.New, key, []byte(timestamp), []byte("."), body)

	header := http.Header{}
	header.Set(headerStripeSignature, "t="+timestamp+",v1="+hex.EncodeToString(mac))
	return header
}
