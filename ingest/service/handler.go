package service

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
	"github.com/google/uuid"

	"github.com/hookbus/hookbus/ingest/verify"
	"github.com/hookbus/hookbus/ingest/webhook"
	"github.com/hookbus/hookbus/pkg/contract"
	"github.com/hookbus/hookbus/pkg/rabbit"
)

// preallocateBodyBytes is the most readBody allocates before body bytes
// arrive.
const preallocateBodyBytes = 64 << 10

// retryAfterSeconds is the Retry-After value of a 503 response.
const retryAfterSeconds = 5

// accepted is the body of a 202 response. Spooled is true, and present,
// only when the webhook went to the spool instead of the broker.
type accepted struct {
	ID         string `json:"id"`
	RoutingKey string `json:"routing_key"`
	Spooled    bool   `json:"spooled,omitempty"`
}

// receive handles POST /webhooks/:source.
func (s *Service) receive(c *gin.Context) {
	code := s.receiveWebhook(c)
	s.metrics.requests.WithLabelValues(strconv.Itoa(code)).Inc()
}

func (s *Service) receiveWebhook(c *gin.Context) int {
	requestID := newID()
	c.Header("X-Request-Id", requestID)

	name := c.Param("source")
	if !contract.ValidSource(name) {
		writeError(c, http.StatusNotFound, "invalid source name: use 1 to 64 lowercase letters, digits, '-' or '_'")
		return http.StatusNotFound
	}
	source := s.sources.Lookup(name)
	if source == nil {
		s.log.Debug("webhook for an unconfigured source", "source", name, "request_id", requestID)
		writeError(c, http.StatusNotFound, "unknown source")
		return http.StatusNotFound
	}

	// The body is kept exactly as sent, so that consumers can check the
	// signature again; ingest does not decompress it.
	if enc := c.Request.Header.Get("Content-Encoding"); enc != "" && !strings.EqualFold(enc, "identity") {
		writeError(c, http.StatusUnsupportedMediaType, "Content-Encoding "+strconv.Quote(enc)+" is not supported; send the body uncompressed")
		return http.StatusUnsupportedMediaType
	}

	body, code, message := s.readBody(c.Request)
	if code != 0 {
		writeError(c, code, message)
		return code
	}

	receivedAt := time.Now()
	if err := source.Verifier.Verify(verify.Request{Header: c.Request.Header, Body: body}, receivedAt); err != nil {
		s.log.Warn("webhook signature rejected", "source", source.Name, "kind", source.Verifier.Kind(), "reason", err, "request_id", requestID, "remote_addr", c.Request.RemoteAddr)
		writeError(c, http.StatusUnauthorized, "invalid signature")
		return http.StatusUnauthorized
	}

	event := webhook.InspectFor(source.Verifier.Kind(), c.Request.Header, body)
	if challenge, ok := slackChallenge(source, event, body); ok {
		s.log.Info("responded to slack url verification", "source", source.Name, "request_id", requestID)
		c.JSON(http.StatusOK, gin.H{"challenge": challenge})
		return http.StatusOK
	}

	msg := contract.Message{
		ID:              event.DeliveryID,
		Source:          source.Name,
		EventType:       event.Type,
		ContentType:     c.Request.Header.Get("Content-Type"),
		ContentEncoding: c.Request.Header.Get("Content-Encoding"),
		ReceivedAt:      receivedAt,
		Header:          contract.FilterHeader(c.Request.Header),
		Meta:            map[string]string{"verified-by": source.Verifier.Kind(), "request-id": requestID},
		Body:            body,
	}
	if msg.ID == "" {
		msg.ID = requestID
	}
	if msg.EventType == "" {
		msg.EventType = contract.UnknownEventType
	}

	publishing, err := msg.Encode()
	if errors.Is(err, contract.ErrHeadersTooLarge) {
		writeError(c, http.StatusRequestHeaderFieldsTooLarge, "request headers too large")
		return http.StatusRequestHeaderFieldsTooLarge
	}
	if err != nil {
		s.log.Error("encode message failed", "source", source.Name, "message_id", msg.ID, "error", err)
		writeError(c, http.StatusInternalServerError, "internal error")
		return http.StatusInternalServerError
	}

	// The publish outlives a client that hangs up: the message may already
	// be on its way, and its outcome belongs in the log.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(c.Request.Context()), s.cfg.PublishTimeout)
	defer cancel()
	routingKey := msg.RoutingKey()
	start := time.Now()
	err = s.publisher.Publish(ctx, s.names.Exchange(), routingKey, publishing)
	elapsed := time.Since(start)
	if err != nil {
		s.metrics.publish.WithLabelValues("failed").Observe(elapsed.Seconds())
		// With the spool on, a webhook that the broker did not confirm is
		// acknowledged once it is on local disk.
		if s.spooler == nil {
			s.logPublishFailure(source.Name, msg.ID, routingKey, err)
		} else if s.spoolWebhook(source.Name, msg.ID, routingKey, publishing, err) {
			c.JSON(http.StatusAccepted, accepted{ID: msg.ID, RoutingKey: routingKey, Spooled: true})
			return http.StatusAccepted
		}
		c.Header("Retry-After", strconv.Itoa(retryAfterSeconds))
		writeError(c, http.StatusServiceUnavailable, "the message broker did not confirm the webhook; retry later")
		return http.StatusServiceUnavailable
	}
	s.metrics.publish.WithLabelValues("confirmed").Observe(elapsed.Seconds())

	s.log.Debug("webhook accepted", "source", source.Name, "message_id", msg.ID, "routing_key", routingKey, "size", len(body))
	c.JSON(http.StatusAccepted, accepted{ID: msg.ID, RoutingKey: routingKey})
	return http.StatusAccepted
}

// readBody reads the whole request body up to the configured limit. It
// returns a status code and message for the client when the body is too
// large, empty or cannot be read, and code 0 otherwise.
func (s *Service) readBody(r *http.Request) (body []byte, code int, message string) {
	limit := s.cfg.MaxBodyBytes
	tooLarge := "body larger than " + strconv.FormatInt(limit, 10) + " bytes"
	if r.ContentLength > limit {
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	}

	// Content-Length is only the client's claim: growing the buffer by it
	// would let idle connections reserve the body limit each without
	// sending a byte. Small bodies get their whole size up front; larger
	// ones grow with the bytes that arrive.
	var buf bytes.Buffer
	if r.ContentLength > 0 {
		buf.Grow(int(min(r.ContentLength, preallocateBodyBytes)))
	}
	_, err := buf.ReadFrom(io.LimitReader(r.Body, limit+1))
	switch {
	case err != nil:
		s.log.Info("request body read failed", "path", r.URL.Path, "error", err)
		return nil, http.StatusBadRequest, "request body could not be read"
	case int64(buf.Len()) > limit:
		return nil, http.StatusRequestEntityTooLarge, tooLarge
	case buf.Len() == 0:
		return nil, http.StatusBadRequest, "empty body: a webhook needs a request body"
	}
	return buf.Bytes(), 0, ""
}

func (s *Service) logPublishFailure(source, id, routingKey string, err error) {
	attrs := []any{"source", source, "message_id", id, "routing_key", routingKey, "error", err}
	switch {
	case errors.Is(err, rabbit.ErrReturned):
		s.log.Error("broker returned the webhook as unroutable; the exchange's alternate exchange is missing, check the topology", attrs...)
	case errors.Is(err, rabbit.ErrNacked):
		s.log.Warn("broker rejected the webhook; a queue may be full", attrs...)
	default:
		s.log.Warn("webhook not confirmed by the broker, responded 503", attrs...)
	}
}

// slackChallenge returns the challenge of a Slack url_verification request,
// which Slack sends once when a request URL is configured and which expects
// the challenge back at once instead of being published. It applies to
// sources of kind slack, and of kind none so that an unverified setup can
// answer it too.
func slackChallenge(source *Source, event webhook.Event, body []byte) (string, bool) {
	kind := source.Verifier.Kind()
	if event.Type != "url_verification" || (kind != verify.KindSlack && kind != verify.KindNone) {
		return "", false
	}
	var handshake struct {
		Challenge string `json:"challenge"`
	}
	if err := json.Unmarshal(bytes.TrimPrefix(body, []byte("\xef\xbb\xbf")), &handshake); err != nil || handshake.Challenge == "" {
		return "", false
	}
	return handshake.Challenge, true
}

// newID returns a new message id: a UUID version 7, which sorts by time.
func newID() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}
