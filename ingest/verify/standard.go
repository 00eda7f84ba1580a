package verify

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// standardHeaders names the three headers of a Standard Webhooks delivery.
type standardHeaders struct {
	id, timestamp, signature string
}

var (
	// webhookHeaders are the names the Standard Webhooks specification uses.
	webhookHeaders = standardHeaders{id: "Webhook-Id", timestamp: "Webhook-Timestamp", signature: "Webhook-Signature"}
	// svixHeaders are the same headers as Svix sends them.
	svixHeaders = standardHeaders{id: "Svix-Id", timestamp: "Svix-Timestamp", signature: "Svix-Signature"}
)

// standardSecretPrefix marks a Standard Webhooks secret. The base64 key
// follows it.
const standardSecretPrefix = "whsec_"

// decodeStandardSecret returns the HMAC key of a Standard Webhooks secret:
// the standard base64 text after an optional "whsec_" prefix, decoded. A
// secret without the prefix is decoded too, as the Go library of the
// Standard Webhooks project does. The error does not contain the secret.
func decodeStandardSecret(secret []byte) ([]byte, error) {
	encoded := strings.TrimPrefix(string(secret), standardSecretPrefix)
	key, err := base64.StdEncoding.DecodeString(encoded)
	if err != nil {
		return nil, errors.New("the secret must be standard base64 after an optional whsec_ prefix")
	}
	if len(key) == 0 {
		return nil, errors.New("the secret decodes to an empty key")
	}
	return key, nil
}

// parseStandardSignatures parses the space-separated "v1,<base64>" entries
// of a webhook-signature header. It reads at most maxEntries entries and
// skips versions other than v1 (such as v1a or v2) and v1 values that are
// not 32 bytes of padded standard base64. A header without any usable v1
// entry is malformed.
func parseStandardSignatures(name, value string) ([][]byte, error) {
	var signatures [][]byte

	rest := value
	for entries := 0; entries < maxEntries; entries++ {
		rest = strings.TrimLeft(rest, " ")
		if rest == "" {
			break
		}
		var entry string
		entry, rest, _ = strings.Cut(rest, " ")

		version, encoded, found := strings.Cut(entry, ",")
		if !found || version != "v1" {
			continue
		}
		if signature, ok := decodeBase64Digest(encoded, sha256.Size); ok {
			signatures = append(signatures, signature)
		}
	}

	if len(signatures) == 0 {
		return nil, fmt.Errorf("%w: %s has no v1 signature of 32 bytes in base64", ErrMalformedHeader, name)
	}
	return signatures, nil
}

// standardVerifier verifies Standard Webhooks deliveries, and Svix
// deliveries, which use the same scheme under svix-* header names. The
// signature is the HMAC-SHA256 of "<id>.<timestamp>.<body>" under the
// decoded secret.
type standardVerifier struct {
	keys      [][]byte
	tolerance time.Duration
}

func (v *standardVerifier) Kind() string { return KindStandard }

func (v *standardVerifier) Verify(req Request, now time.Time) error {
	names := chooseStandardHeaders(req.Header)

	id, err := headerValue(req.Header, names.id)
	if err != nil {
		return err
	}
	timestampValue, err := headerValue(req.Header, names.timestamp)
	if err != nil {
		return err
	}
	signatureValue, err := headerValue(req.Header, names.signature)
	if err != nil {
		return err
	}

	unix, ok := parseUnixSeconds(timestampValue)
	if !ok {
		return fmt.Errorf("%w: %s must be Unix seconds in decimal digits", ErrMalformedHeader, names.timestamp)
	}
	signatures, err := parseStandardSignatures(names.signature, signatureValue)
	if err != nil {
		return err
	}

	// The signed text contains the timestamp header as received. The Standard
	// Webhooks Go library formats the parsed integer instead, which differs
	// only for a header with leading zeros.
	signed := []byte(id + "." + timestampValue + ".")
	if !matchAny(sha256.New, v.keys, signatures, signed, req.Body) {
		return fmt.Errorf("%w: none of %d v1 signatures in %s matches with any configured secret (%d)",
			ErrMismatch, len(signatures), names.signature, len(v.keys))
	}
	return checkTimestamp(unix, now, v.tolerance)
}

// chooseStandardHeaders picks the webhook-* names when any of them is
// present, and the svix-* names otherwise. The three headers are never
// mixed between the two sets.
func chooseStandardHeaders(header http.Header) standardHeaders {
	for _, name := range []string{webhookHeaders.id, webhookHeaders.timestamp, webhookHeaders.signature} {
		if header.Get(name) != "" {
			return webhookHeaders
		}
	}
	for _, name := range []string{svixHeaders.id, svixHeaders.timestamp, svixHeaders.signature} {
		if header.Get(name) != "" {
			return svixHeaders
		}
	}
	return webhookHeaders
}

// signStandard returns webhook-id, webhook-timestamp and webhook-signature
// headers. An empty id is replaced by a random "msg_" id.
func signStandard(key, body []byte, unix int64, id string) (http.Header, error) {
	if id == "" {
		id = "msg_" + rand.Text()
	}
	if len(id) > maxHeaderLength || strings.ContainsFunc(id, func(r rune) bool { return r <= ' ' || r >= 0x7f }) {
		return nil, fmt.Errorf("verify: ID must be at most %d printable ASCII characters without spaces", maxHeaderLength)
	}

	timestamp := strconv.FormatInt(unix, 10)
	mac := computeMAC(sha256.New, key, []byte(id+"."+timestamp+"."), body)

	header := http.Header{}
	header.Set(webhookHeaders.id, id)
	header.Set(webhookHeaders.timestamp, timestamp)
	header.Set(webhookHeaders.signature, "v1,"+base64.StdEncoding.EncodeToString(mac))
	return header, nil
}
