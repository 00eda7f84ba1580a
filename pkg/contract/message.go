package contract

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	amqp "github.com/rabbitmq/amqp091-go"
)

// Version is the contract version this package writes. A reader accepts
// messages of the same version and rejects others with ErrContract.
const Version = "1"

// AppID is the AMQP app-id property of every message ingest publishes.
const AppID = "hookbus-ingest"

// Names of the AMQP headers the contract defines. Header names of original
// HTTP request headers are HTTPHeaderPrefix followed by the lowercased
// HTTP header name.
const (
	HeaderContract   = "hookbus-contract"
	HeaderSource     = "hookbus-source"
	HeaderReceivedAt = "hookbus-received-at"
	HTTPHeaderPrefix = "http."

	// MetaPrefix starts every hookbus header. Headers with this prefix
	// that are not part of the core contract (added by ingest or by a
	// processor, such as "hookbus-verified-by") are kept in Message.Meta.
	MetaPrefix = "hookbus-"
)

// MaxHeaderBytes is the maximum size of the AMQP headers table that Encode
// produces, counted as its encoding on the wire. AMQP sends all properties in
// one frame, and RabbitMQ closes a connection whose frame is larger than
// frame_max (128 KiB by default), so the headers must stay well below that.
const MaxHeaderBytes = 64 << 10

// maxShortString is the maximum length in bytes of an AMQP short string, the
// type of header names and of the message-id, content-type and
// content-encoding properties. amqp091-go v1.17.0 fails to write a longer one
// and then closes the whole connection, which fails every publish in flight
// on it.
const maxShortString = 255

// ErrContract is wrapped by every error that reports a message that does not
// follow this contract.
var ErrContract = errors.New("contract: message violates the hookbus contract")

// ErrHeadersTooLarge is returned by Encode when the request headers do not fit
// in MaxHeaderBytes, or when a header name, the id, the content type or the
// content encoding is longer than 255 bytes.
var ErrHeadersTooLarge = errors.New("contract: request headers too large")

// Message is one webhook request as the contract carries it.
type Message struct {
	// ID is the message id: the provider's delivery id when it sent one,
	// otherwise an id generated at receipt. Consumers deduplicate by it.
	ID string
	// Source is the name in the webhook URL, /webhooks/<source>.
	Source string
	// EventType is the provider's event type as sent (for example
	// "orders/create"), or UnknownEventType.
	EventType string
	// ContentType and ContentEncoding are the request's Content-Type and
	// Content-Encoding headers as received (possibly empty).
	ContentType     string
	ContentEncoding string
	// ReceivedAt is when ingest received the request.
	ReceivedAt time.Time
	// Header holds the original HTTP request headers without hop-by-hop
	// headers and credentials (see FilterHeader).
	Header http.Header
	// Meta holds the other "hookbus-" headers by name without the prefix,
	// for example "verified-by", or "attempts" (failed attempts so far, in
	// decimal) on a message that is being retried.
	Meta map[string]string
	// Body is the raw request body, byte for byte.
	Body []byte
}

// RoutingKey returns the message's routing key, see RoutingKey.
func (m *Message) RoutingKey() string {
	return RoutingKey(m.Source, m.EventType)
}

// Encode returns the AMQP publishing that carries m: a persistent message
// whose body is m.Body. It returns an error wrapping ErrHeadersTooLarge when
// the headers would not fit in one AMQP frame or when the id, the content
// type, the content encoding or a header name is longer than an AMQP short
// string (255 bytes). It returns an error wrapping ErrContract when m lacks an
// id or a valid source.
func (m *Message) Encode() (amqp.Publishing, error) {
	if m.ID == "" {
		return amqp.Publishing{}, fmt.Errorf("%w: empty message id", ErrContract)
	}
	if !ValidSource(m.Source) {
		return amqp.Publishing{}, fmt.Errorf("%w: invalid source %q", ErrContract, m.Source)
	}
	for _, p := range []struct{ name, value string }{
		{"message id", m.ID},
		{"content type", m.ContentType},
		{"content encoding", m.ContentEncoding},
	} {
		if len(p.value) > maxShortString {
			return amqp.Publishing{}, fmt.Errorf("%w: %s of %d bytes, limit %d", ErrHeadersTooLarge, p.name, len(p.value), maxShortString)
		}
	}

	headers := amqp.Table{
		HeaderContract:   Version,
		HeaderSource:     m.Source,
		HeaderReceivedAt: m.ReceivedAt.UTC().Format(time.RFC3339Nano),
	}
	size := 0
	for key, value := range headers {
		size += stringFieldSize(key, value.(string))
	}
	for name, values := range m.Header {
		key := HTTPHeaderPrefix + strings.ToLower(name)
		if len(key) > maxShortString {
			return amqp.Publishing{}, fmt.Errorf("%w: header name of %d bytes, limit %d", ErrHeadersTooLarge, len(name), maxShortString-len(HTTPHeaderPrefix))
		}
		if len(values) == 1 {
			headers[key] = values[0]
			size += stringFieldSize(key, values[0])
			continue
		}
		list := make([]any, len(values))
		size += arrayFieldSize(key)
		for i, v := range values {
			list[i] = v
			size += arrayItemSize(v)
		}
		headers[key] = list
	}
	for name, value := range m.Meta {
		key := MetaPrefix + name
		if len(key) > maxShortString {
			return amqp.Publishing{}, fmt.Errorf("%w: meta name of %d bytes, limit %d", ErrHeadersTooLarge, len(name), maxShortString-len(MetaPrefix))
		}
		headers[key] = value
		size += stringFieldSize(key, value)
	}
	if size > MaxHeaderBytes {
		return amqp.Publishing{}, fmt.Errorf("%w: %d bytes, limit %d", ErrHeadersTooLarge, size, MaxHeaderBytes)
	}

	return amqp.Publishing{
		Headers:         headers,
		ContentType:     m.ContentType,
		ContentEncoding: m.ContentEncoding,
		DeliveryMode:    amqp.Persistent,
		MessageId:       m.ID,
		Timestamp:       m.ReceivedAt,
		Type:            truncate(m.EventType, 255),
		AppId:           AppID,
		Body:            m.Body,
	}, nil
}

// Decode reads a message from an AMQP delivery. It returns an error wrapping
// ErrContract when the delivery has no message id, no or another contract
// version, or no valid source. Decode keeps a reference to d.Body.
func Decode(d *amqp.Delivery) (*Message, error) {
	version, _ := headerString(d.Headers[HeaderContract])
	if version != Version {
		return nil, fmt.Errorf("%w: header %s is %q, want %q", ErrContract, HeaderContract, version, Version)
	}
	if d.MessageId == "" {
		return nil, fmt.Errorf("%w: empty message-id property", ErrContract)
	}
	source, _ := headerString(d.Headers[HeaderSource])
	if !ValidSource(source) {
		return nil, fmt.Errorf("%w: invalid %s header %q", ErrContract, HeaderSource, source)
	}

	m := &Message{
		ID:              d.MessageId,
		Source:          source,
		EventType:       d.Type,
		ContentType:     d.ContentType,
		ContentEncoding: d.ContentEncoding,
		ReceivedAt:      d.Timestamp,
		Header:          http.Header{},
		Body:            d.Body,
	}
	if m.EventType == "" {
		m.EventType = UnknownEventType
	}
	if s, ok := headerString(d.Headers[HeaderReceivedAt]); ok {
		if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
			m.ReceivedAt = t
		}
	}

	for key, value := range d.Headers {
		switch {
		case key == HeaderContract || key == HeaderSource || key == HeaderReceivedAt:
		case strings.HasPrefix(key, HTTPHeaderPrefix):
			name := http.CanonicalHeaderKey(strings.TrimPrefix(key, HTTPHeaderPrefix))
			m.Header[name] = headerStrings(value)
		case strings.HasPrefix(key, MetaPrefix):
			if s, ok := metaString(value); ok {
				if m.Meta == nil {
					m.Meta = map[string]string{}
				}
				m.Meta[strings.TrimPrefix(key, MetaPrefix)] = s
			}
		}
	}
	return m, nil
}

// droppedHeaders are the hop-by-hop headers, which describe one HTTP
// connection rather than the request (RFC 9110, section 7.6.1), and the
// credentials meant for the receiver alone.
var droppedHeaders = map[string]bool{
	"Connection":          true,
	"Keep-Alive":          true,
	"Proxy-Connection":    true,
	"Proxy-Authenticate":  true,
	"Proxy-Authorization": true,
	"Te":                  true,
	"Trailer":             true,
	"Transfer-Encoding":   true,
	"Upgrade":             true,
	"Authorization":       true,
	"Cookie":              true,
}

// FilterHeader returns a copy of h without hop-by-hop headers (including
// those that the Connection header names) and without credentials
// (Authorization, Proxy-Authorization, Cookie).
func FilterHeader(h http.Header) http.Header {
	named := map[string]bool{}
	for _, v := range h.Values("Connection") {
		for _, name := range strings.Split(v, ",") {
			named[http.CanonicalHeaderKey(strings.TrimSpace(name))] = true
		}
	}
	out := make(http.Header, len(h))
	for name, values := range h {
		canonical := http.CanonicalHeaderKey(name)
		if droppedHeaders[canonical] || named[canonical] {
			continue
		}
		out[canonical] = append([]string(nil), values...)
	}
	return out
}

func headerString(v any) (string, bool) {
	switch s := v.(type) {
	case string:
		return s, true
	case []byte:
		return string(s), true
	}
	return "", false
}

// metaString returns a hookbus header value as text: strings as they are,
// integers (such as hookbus-attempts) in decimal.
func metaString(v any) (string, bool) {
	if s, ok := headerString(v); ok {
		return s, true
	}
	switch n := v.(type) {
	case int8, int16, int32, int64, int, uint8, uint16, uint32:
		return fmt.Sprint(n), true
	}
	return "", false
}

func headerStrings(v any) []string {
	if s, ok := headerString(v); ok {
		return []string{s}
	}
	list, ok := v.([]any)
	if !ok {
		return []string{fmt.Sprint(v)}
	}
	out := make([]string, 0, len(list))
	for _, item := range list {
		if s, ok := headerString(item); ok {
			out = append(out, s)
		} else {
			out = append(out, fmt.Sprint(item))
		}
	}
	return out
}

// Sizes of AMQP field-table entries on the wire. A name is a short string,
// one length byte followed by the bytes. A string value is a type byte, a
// four-byte length and the bytes. An array is a type byte and a four-byte
// length, followed by its items, each a type byte and a value.
func stringFieldSize(name, value string) int { return 1 + len(name) + 1 + 4 + len(value) }
func arrayFieldSize(name string) int         { return 1 + len(name) + 1 + 4 }
func arrayItemSize(value string) int         { return 1 + 4 + len(value) }

// truncate cuts s to at most n bytes without splitting a UTF-8 character.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
