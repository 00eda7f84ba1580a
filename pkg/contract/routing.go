package contract

import "strings"

// UnknownEventType is the event type of a webhook whose type could not be
// determined from its headers or body.
const UnknownEventType = "unknown"

const (
	// MaxSourceLength is the maximum length of a source name in bytes.
	MaxSourceLength = 64

	// maxRoutingKeyLength is AMQP's limit for a short string, which is
	// what a routing key is.
	maxRoutingKeyLength = 255
)

// ValidSource reports whether name can be used as a source: 1 to 64
// characters, each a lowercase ASCII letter, a digit, '-' or '_'. Such a name
// is a single routing-key word, so it cannot add or remove words in the
// routing keys built from it.
func ValidSource(name string) bool {
	if len(name) == 0 || len(name) > MaxSourceLength {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isWordByte(name[i]) {
			return false
		}
	}
	return true
}

// EventTypeKey converts a provider's event type into routing-key words.
// Letters are lowercased; '/', '.', ':' and white space separate words (so
// Shopify's "orders/create" becomes "orders.create"); any other byte that is
// not a letter, digit, '-' or '_' becomes '_'. Empty words are dropped, the
// result is cut to fit a routing key after a maximum-length source, and an
// empty result is UnknownEventType.
func EventTypeKey(eventType string) string {
	const maxLength = maxRoutingKeyLength - MaxSourceLength - 1

	var b strings.Builder
	b.Grow(min(len(eventType), maxLength))
	pendingDot := false
	for i := 0; i < len(eventType) && b.Len() < maxLength; i++ {
		c := eventType[i]
		switch {
		case c == '/' || c == '.' || c == ':' || c == ' ' || c == '\t':
			pendingDot = b.Len() > 0
			continue
		case c >= 'A' && c <= 'Z':
			c += 'a' - 'A'
		case !isWordByte(c):
			c = '_'
		}
		if pendingDot {
			if b.Len()+2 > maxLength {
				break
			}
			b.WriteByte('.')
			pendingDot = false
		}
		b.WriteByte(c)
	}
	if b.Len() == 0 {
		return UnknownEventType
	}
	return b.String()
}

// RoutingKey returns the routing key of a webhook: the source, a dot, and the
// event type converted by EventTypeKey, for example "shopify.orders.create".
// The source must be valid (see ValidSource).
func RoutingKey(source, eventType string) string {
	return source + "." + EventTypeKey(eventType)
}

func isWordByte(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '_'
}
