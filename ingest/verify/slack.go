package verify

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

const (
	headerSlackSignature = "X-Slack-Signature"
	headerSlackTimestamp = "X-Slack-Request-Timestamp"
)

// slackScheme is the form of X-Slack-Signature: "v0=" and 32 bytes of hex.
var slackScheme = digestScheme{header: headerSlackSignature, prefix: "v0=", newHash: sha256.New, size: sha256.Size}

// parseSlackHeaders parses the signature and timestamp header values.
func parseSlackHeaders(signatureValue, timestampValue string) (signature []byte, unix int64, err error) {
	signature, err = slackScheme.parse(signatureValue)
	if err != nil {
		return nil, 0, err
	}
	unix, ok := parseUnixSeconds(timestampValue)
	if !ok {
		return nil, 0, fmt.Errorf("%w: %s must be Unix seconds in decimal digits", ErrMalformedHeader, headerSlackTimestamp)
	}
	return signature, unix, nil
}

// slackVerifier verifies X-Slack-Signature, the HMAC-SHA256 of
// "v0:<X-Slack-Request-Timestamp>:<body>" under the app's signing secret.
type slackVerifier struct {
	keys      [][]byte
	tolerance time.Duration
}

func (v *slackVerifier) Kind() string { return KindSlack }

func (v *slackVerifier) Verify(req Request, now time.Time) error {
	signatureValue, err := headerValue(req.Header, headerSlackSignature)
	if err != nil {
		return err
	}
	timestampValue, err := headerValue(req.Header, headerSlackTimestamp)
	if err != nil {
		return err
	}
	signature, unix, err := parseSlackHeaders(signatureValue, timestampValue)
	if err != nil {
		return err
	}

	if !matchAny(sha256.New, v.keys, [][]byte{signature}, []byte("v0:"+timestampValue+":"), req.Body) {
		return fmt.Errorf("%w: %s does not match with any configured secret (%d)", ErrMismatch, headerSlackSignature, len(v.keys))
	}
	return checkTimestamp(unix, now, v.tolerance)
}

func signSlack(key, body []byte, unix int64) http.Header {
	timestamp := strconv.FormatInt(unix, 10)
	mac := computeMAC(sha256.New, key, []byte("v0:"+timestamp+":"), body)

	header := http.Header{}
	header.Set(headerSlackTimestamp, timestamp)
	header.Set(headerSlackSignature, "v0="+hex.EncodeToString(mac))
	return header
}
