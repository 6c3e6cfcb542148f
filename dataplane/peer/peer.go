// Package peer carries the verified identity of the downstream peer of a
// connection through the request context: the SPIFFE ID (URI SAN of the leaf
// certificate) of an mTLS peer, or nothing for a plaintext connection.
//
// The listener stores it once per connection; the request path (RBAC,
// logging) reads it with Identity.
package peer

import "context"

// identityKey is the unexported context key type for the peer identity.
type identityKey struct{}

// WithIdentity returns a copy of ctx carrying the peer's verified SPIFFE ID.
// An empty spiffeID means a plaintext (unauthenticated) peer and leaves ctx
// unchanged.
func WithIdentity(ctx context.Context, spiffeID string) context.Context {
	if spiffeID == "" {
		return ctx
	}
	return context.WithValue(ctx, identityKey{}, spiffeID)
}

// Identity returns the verified SPIFFE ID of the connection's peer, or "" when
// the peer is plaintext or did not present a certificate.
func Identity(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	id, _ := ctx.Value(identityKey{}).(string)
	return id
}
