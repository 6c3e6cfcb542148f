package controlplane

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/credentials"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/controlplane/ca"
	"github.com/meshgate/meshgate/controlplane/tokens"
)

// revocationSweepInterval is how often the open connections are checked
// against the store's revocations, in case a revocation made through
// another replica was not seen by a watch (stores without one: files).
const revocationSweepInterval = 30 * time.Second

// connGuard keeps every connection of the xDS port that presented a client
// certificate, and closes those whose certificate is revoked (its join
// token, its identity or its enrolment) when the revocation is made here
// or seen in the store: the proxy's xDS streams end with the connection,
// and reopening one is refused by the xDS authorizer (authorizeProxy).
// Closing the connection, rather than ending each stream, costs nothing
// per stream.
type connGuard struct {
	ca          *ca.CA
	revocations *ca.Revocations
	logger      *slog.Logger

	mu    sync.Mutex
	conns map[*guardedConn]struct{}
}

func newConnGuard(c *ca.CA, r *ca.Revocations, logger *slog.Logger) *connGuard {
	return &connGuard{ca: c, revocations: r, logger: logger, conns: map[*guardedConn]struct{}{}}
}

// guardedConn is a connection authenticated by a mesh certificate.
type guardedConn struct {
	net.Conn
	guard *connGuard
	id    spiffeid.ID
	leaf  *x509.Certificate
	once  sync.Once
}

// Close forgets the connection and closes it.
func (c *guardedConn) Close() error {
	c.once.Do(func() {
		c.guard.mu.Lock()
		delete(c.guard.conns, c)
		c.guard.mu.Unlock()
	})
	return c.Conn.Close()
}

// guardedCredentials are the xDS port's transport credentials: TLS, with
// every connection authenticated by a mesh certificate kept by the guard.
type guardedCredentials struct {
	credentials.TransportCredentials
	guard *connGuard
}

// credentials wraps the xDS port's TLS credentials.
func (g *connGuard) credentials(tc credentials.TransportCredentials) credentials.TransportCredentials {
	return guardedCredentials{TransportCredentials: tc, guard: g}
}

// ServerHandshake runs the TLS handshake and keeps a connection whose
// client certificate verifies.
func (c guardedCredentials) ServerHandshake(raw net.Conn) (net.Conn, credentials.AuthInfo, error) {
	conn, info, err := c.TransportCredentials.ServerHandshake(raw)
	if err != nil {
		return conn, info, err
	}
	tlsInfo, ok := info.(credentials.TLSInfo)
	if !ok || len(tlsInfo.State.PeerCertificates) == 0 {
		return conn, info, nil // a join token enrolling: nothing to revoke
	}
	certs := tlsInfo.State.PeerCertificates
	id, err := c.guard.ca.VerifyLeaf(certs[0], certs[1:], x509.ExtKeyUsageClientAuth)
	if err != nil {
		return conn, info, nil // refused by the services, with the reason
	}
	gc := &guardedConn{Conn: conn, guard: c.guard, id: id, leaf: certs[0]}
	c.guard.mu.Lock()
	c.guard.conns[gc] = struct{}{}
	c.guard.mu.Unlock()
	return gc, info, nil
}

// Clone implements credentials.TransportCredentials.
func (c guardedCredentials) Clone() credentials.TransportCredentials {
	return guardedCredentials{TransportCredentials: c.TransportCredentials.Clone(), guard: c.guard}
}

// check reports whether the certificate leaf of id is revoked: from the
// store, or, when the store cannot be read, from the revocations last read.
func (g *connGuard) check(ctx context.Context, id spiffeid.ID, leaf *x509.Certificate) error {
	err := g.revocations.CheckCertificate(ctx, id, leaf)
	if err != nil && !errors.Is(err, ca.ErrRevoked) {
		g.logger.Warn("cannot read revocations from the store: checking against those last read", "spiffeID", id.String(), "error", err)
		err = g.revocations.KnownRevoked(id, leaf)
	}
	return err
}

// sweep closes every open connection whose certificate is revoked now, and
// returns how many it closed.
func (g *connGuard) sweep(ctx context.Context) (int, error) {
	snap, err := g.revocations.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	g.mu.Lock()
	open := slices.Collect(maps.Keys(g.conns))
	g.mu.Unlock()
	closed := 0
	for _, c := range open {
		if err := snap.CheckCertificate(c.id, c.leaf); err != nil {
			g.logger.Info("closing the connection of a revoked proxy", "spiffeID", c.id.String(), "peer", c.RemoteAddr().String(), "reason", err.Error())
			_ = c.Close()
			closed++
		}
	}
	return closed, nil
}

// storeWatcher is implemented by stores that report writes (state.Consul).
type storeWatcher interface {
	Watch(ctx context.Context, prefix string, changed func()) error
}

// run sweeps at start, every revocationSweepInterval and, when the store
// reports writes, soon after a token or a revocation changed, until ctx is
// done.
func (g *connGuard) run(ctx context.Context, store any) {
	kick := make(chan struct{}, 1)
	changed := func() {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	if w, ok := store.(storeWatcher); ok {
		for _, prefix := range []string{"revocations/", "tokens/"} {
			go func() { _ = w.Watch(ctx, prefix, changed) }()
		}
	}
	ticker := time.NewTicker(revocationSweepInterval)
	defer ticker.Stop()
	for {
		// The first sweep also reads the revocations the CA and the xDS
		// authorizer fall back on while the store cannot be read.
		if _, err := g.sweep(ctx); err != nil && ctx.Err() == nil {
			g.logger.Warn("cannot check open connections against revocations", "error", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-kick:
		}
	}
}

// RevokeRequest is the body of POST /revocations: exactly one of Identity
// (a SPIFFE ID), Service (with Namespace, default "default": the identity
// of that service in the mesh's trust domain), Proxy (the node id of a
// proxy connected to this control plane: its enrolment) or Enrolment.
type RevokeRequest struct {
	Identity  string `json:"identity,omitempty"`
	Service   string `json:"service,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Proxy     string `json:"proxy,omitempty"`
	Enrolment string `json:"enrolment,omitempty"`
}

// RevokeResponse answers POST /revocations.
type RevokeResponse struct {
	Revocation *ca.Revocation `json:"revocation"`
	// ClosedConnections is how many connections of revoked proxies (with
	// their xDS streams) this control plane closed; other replicas close
	// theirs when they see the revocation.
	ClosedConnections int `json:"closedConnections"`
}

// RevokedToken answers DELETE /tokens/{id}: the token's record, and how many
// connections of its proxies this control plane closed.
type RevokedToken struct {
	tokens.Record
	ClosedConnections int `json:"closedConnections"`
}

func (cp *ControlPlane) handleRevoke(w http.ResponseWriter, r *http.Request) {
	var req RevokeRequest
	if !decodeBody(w, r, &req) {
		return
	}
	set := 0
	for _, v := range []string{req.Identity, req.Service, req.Proxy, req.Enrolment} {
		if v != "" {
			set++
		}
	}
	if set != 1 || req.Namespace != "" && req.Service == "" {
		writeError(w, http.StatusBadRequest, errors.New("give exactly one of identity, service (with namespace), proxy or enrolment"))
		return
	}
	ctx := r.Context()
	var rev ca.Revocation
	var err error
	switch {
	case req.Identity != "", req.Service != "":
		var id spiffeid.ID
		if id, err = cp.revocationIdentity(req); err != nil {
			writeError(w, http.StatusBadRequest, err)
			return
		}
		rev, err = cp.revocations.RevokeIdentity(ctx, id)
	case req.Proxy != "":
		p, ok := cp.connectedProxy(req.Proxy)
		switch {
		case !ok:
			writeError(w, http.StatusNotFound, fmt.Errorf("no proxy with node id %q is connected to this control plane "+
				"(with several replicas, ask the one it is connected to, or revoke its enrolment or identity)", req.Proxy))
			return
		case p.Enrolment == "":
			writeError(w, http.StatusConflict, fmt.Errorf("proxy %q has a certificate without an enrolment: revoke its identity (%s) or its token", req.Proxy, p.SPIFFEID))
			return
		}
		rev, err = cp.revocations.RevokeEnrolment(ctx, p.Enrolment, p.SPIFFEID, p.ID)
	default:
		rev, err = cp.revocations.RevokeEnrolment(ctx, req.Enrolment, "", "")
		if errors.Is(err, ca.ErrUnknownEnrolment) {
			writeError(w, http.StatusBadRequest, err)
			return
		}
	}
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	cp.logger.Info("revoked", "kind", rev.Kind, "spiffeID", rev.SPIFFEID, "enrolment", rev.Enrolment, "node", rev.Node)
	writeJSON(w, http.StatusOK, RevokeResponse{Revocation: &rev, ClosedConnections: cp.closeRevoked(ctx)})
}

// revocationIdentity is the SPIFFE ID a RevokeRequest names, in the mesh's
// trust domain.
func (cp *ControlPlane) revocationIdentity(req RevokeRequest) (spiffeid.ID, error) {
	td, _ := cp.meshSettings()
	s := req.Identity
	if s == "" {
		s = spiffeid.Of(td, cmp.Or(req.Namespace, "default"), req.Service)
	}
	id, err := spiffeid.Parse(s)
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("identity: %w", err)
	}
	if id.TrustDomain != td {
		return spiffeid.ID{}, fmt.Errorf("identity %s is not in the mesh's trust domain %q", id, td)
	}
	if id.Namespace == tokens.ReservedNamespace {
		return spiffeid.ID{}, fmt.Errorf("identity %s: the namespace %s is the control plane's", id, tokens.ReservedNamespace)
	}
	return id, nil
}

// connectedProxy is the status of the proxy with node id, when connected.
func (cp *ControlPlane) connectedProxy(id string) (proxyInfo, bool) {
	for _, p := range cp.xds.Proxies() {
		if p.ID == id {
			return proxyInfo{ID: p.ID, SPIFFEID: p.SPIFFEID, Enrolment: p.Enrolment}, true
		}
	}
	return proxyInfo{}, false
}

// proxyInfo names one connected proxy's identity and enrolment.
type proxyInfo struct {
	ID, SPIFFEID, Enrolment string
}

// closeRevoked closes this replica's connections of revoked proxies now
// (rather than at the next sweep) and returns how many.
func (cp *ControlPlane) closeRevoked(ctx context.Context) int {
	n, err := cp.guard.sweep(context.WithoutCancel(ctx))
	if err != nil {
		cp.logger.Warn("cannot check open connections against revocations", "error", err)
	}
	return n
}

func (cp *ControlPlane) handleListRevocations(w http.ResponseWriter, r *http.Request) {
	list, err := cp.revocations.List(r.Context())
	if err != nil {
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"revocations": list})
}

// setUpRevocation creates the revocation registry, makes the CA service
// check it, and the guard that closes revoked proxies' connections.
func (cp *ControlPlane) setUpRevocation() {
	cp.revocations = ca.NewRevocations(cp.store, cp.tokens, nil)
	cp.caService.SetRevocations(cp.revocations)
	cp.guard = newConnGuard(cp.ca, cp.revocations, cp.logger.With("component", "revocation"))
}
