// Package verify checks webhook signatures over the exact raw request body.
//
// Each sender kind (GitHub, Stripe, Slack, Shopify, Standard Webhooks, a
// configurable generic HMAC, and "none") has its own [Verifier], built by
// [New] from the kind name, one or more secrets and [Options]. Several secrets
// may be given so that a secret can be rotated without dropping deliveries:
// a request passes when any of them produces a matching signature.
//
// All signature comparisons use [crypto/hmac.Equal], which runs in constant
// time for inputs of equal length. Header parsers cap the header length at
// 4096 bytes and read at most 16 entries of a multi-signature header, so
// hostile headers cannot make them allocate without bound.
//
// Verify errors wrap one of [ErrMissingHeader], [ErrMalformedHeader],
// [ErrStaleTimestamp] or [ErrMismatch], which callers test with
// [errors.Is]. The error text names the header involved but never contains
// a secret or an expected signature, so it is safe to log. The HTTP layer
// should still reply to every failure with the same 401 status and generic
// body, whatever the reason.
//
// [Sign] produces the headers a real sender would attach, for tests and for
// tools that send signed sample deliveries.
package verify
