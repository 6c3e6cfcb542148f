package controlplane

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/controlplane/ca"
	"github.com/meshgate/meshgate/controlplane/tokens"
)

// revocationSweepInterval is how often the open xDS streams are checked
// against the store's revocations, in case a revocation made through
// another replica was not seen by a watch (stores without one: files).
const revocationSweepInterval = 30 * time.Second

// streamGuard ties every xDS stream to the client certificate it was opened
// with: a stream whose certificate is revoked (its join token, its identity
// or its enrolment) is refused when it opens and closed when the revocation
// is made here or seen in the store.
type streamGuard struct {
	ca          *ca.CA
	revocations *ca.Revocations
	logger      *slog.Logger

	mu      sync.Mutex
	streams map[*guardedStream]struct{}
}

func newStreamGuard(c *ca.CA, r *ca.Revocations, logger *slog.Logger) *streamGuard {
	return &streamGuard{ca: c, revocations: r, logger: logger, streams: map[*guardedStream]struct{}{}}
}

// guardedStream is an xDS stream the guard can end: its context is
// cancelled with the revocation as the cause, and a receive blocked on the
// client returns at once, which ends go-control-plane's stream handler.
type guardedStream struct {
	grpc.ServerStream
	ctx    context.Context
	cancel context.CancelCauseFunc
	id     ca.ID
	leaf   *x509.Certificate
}

func (s *guardedStream) Context() context.Context { return s.ctx }

// RecvMsg receives the next request, or fails as soon as the stream is
// revoked. The receive that was waiting then completes in the background
// once gRPC ends the stream; its message (a fresh one per call in the
// generated code) is dropped.
func (s *guardedStream) RecvMsg(m any) error {
	if s.ctx.Err() != nil {
		return context.Cause(s.ctx)
	}
	done := make(chan error, 1)
	go func() { done <- s.ServerStream.RecvMsg(m) }()
	select {
	case err := <-done:
		return err
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	}
}

// intercept is the gRPC stream interceptor of the xDS port. A stream
// without a valid client certificate passes through (the xDS authorizer
// refuses it with the reason). When the store cannot be read the stream is
// checked against the revocations last read (and let in unless they revoke
// it): a revocation found later by a sweep still closes it.
func (g *streamGuard) intercept(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	id, leaf, err := g.ca.PeerIdentity(ss.Context())
	if err != nil {
		return handler(srv, ss)
	}
	err = g.revocations.CheckCertificate(ss.Context(), id, leaf)
	if err != nil && !errors.Is(err, ca.ErrRevoked) {
		g.logger.Warn("cannot read revocations from the store: checking the xDS stream against those last read", "spiffeID", id.String(), "error", err)
		err = g.revocations.KnownRevoked(id, leaf)
	}
	if err != nil {
		g.logger.Warn("xDS stream refused: revoked", "spiffeID", id.String(), "peer", peerAddr(ss.Context()), "reason", err.Error())
		return grpcstatus.Error(codes.PermissionDenied, "xDS refused: "+err.Error())
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	gs := &guardedStream{ServerStream: ss, ctx: ctx, cancel: cancel, id: id, leaf: leaf}
	g.mu.Lock()
	g.streams[gs] = struct{}{}
	g.mu.Unlock()
	defer func() {
		g.mu.Lock()
		delete(g.streams, gs)
		g.mu.Unlock()
		cancel(nil)
	}()
	err = handler(srv, gs)
	if cause := context.Cause(ctx); errors.Is(cause, ca.ErrRevoked) {
		return grpcstatus.Error(codes.PermissionDenied, "xDS stream closed: "+cause.Error())
	}
	return err
}

// sweep closes every open stream whose certificate is revoked now, and
// returns how many it closed.
func (g *streamGuard) sweep(ctx context.Context) (int, error) {
	snap, err := g.revocations.Snapshot(ctx)
	if err != nil {
		return 0, err
	}
	g.mu.Lock()
	open := slices.Collect(maps.Keys(g.streams))
	g.mu.Unlock()
	closed := 0
	for _, s := range open {
		if err := snap.CheckCertificate(s.id, s.leaf); err != nil && s.ctx.Err() == nil {
			g.logger.Info("closing the xDS stream of a revoked proxy", "spiffeID", s.id.String(), "peer", peerAddr(s.ServerStream.Context()), "reason", err.Error())
			s.cancel(err)
			closed++
		}
	}
	return closed, nil
}

// storeWatcher is implemented by stores that report writes (state.Consul).
type storeWatcher interface {
	Watch(ctx context.Context, prefix string, changed func()) error
}

// run sweeps every revocationSweepInterval and, when the store reports
// writes, soon after a token or a revocation changed, until ctx is done.
func (g *streamGuard) run(ctx context.Context, store any) {
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
		// The first sweep also reads the revocations the CA and the
		// interceptor fall back on while the store cannot be read.
		if _, err := g.sweep(ctx); err != nil && ctx.Err() == nil {
			g.logger.Warn("cannot check open xDS streams against revocations", "error", err)
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
	// ClosedStreams is how many xDS streams of this control plane the
	// revocation closed (other replicas close theirs when they see it).
	ClosedStreams int `json:"closedStreams"`
}

// RevokedToken answers DELETE /tokens/{id}: the token's record, and how many
// xDS streams of its proxies this control plane closed.
type RevokedToken struct {
	tokens.Record
	ClosedStreams int `json:"closedStreams"`
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
		var id ca.ID
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
	writeJSON(w, http.StatusOK, RevokeResponse{Revocation: &rev, ClosedStreams: cp.closeRevokedStreams(ctx)})
}

// revocationIdentity is the SPIFFE ID a RevokeRequest names, in the mesh's
// trust domain.
func (cp *ControlPlane) revocationIdentity(req RevokeRequest) (ca.ID, error) {
	td, _ := cp.meshSettings()
	s := req.Identity
	if s == "" {
		s = "spiffe://" + td + "/ns/" + cmp.Or(req.Namespace, "default") + "/svc/" + req.Service
	}
	id, err := ca.ParseID(s)
	if err != nil {
		return ca.ID{}, fmt.Errorf("identity: %w", err)
	}
	if id.TrustDomain != td {
		return ca.ID{}, fmt.Errorf("identity %s is not in the mesh's trust domain %q", id, td)
	}
	if id.Namespace == tokens.ReservedNamespace {
		return ca.ID{}, fmt.Errorf("identity %s: the namespace %s is the control plane's", id, tokens.ReservedNamespace)
	}
	return id, nil
}

// connectedProxy is the status of the proxy with node id, when connected.
func (cp *ControlPlane) connectedProxy(id string) (ProxyInfo, bool) {
	for _, p := range cp.xds.Proxies() {
		if p.ID == id {
			return ProxyInfo{ID: p.ID, SPIFFEID: p.SPIFFEID, Enrolment: p.Enrolment}, true
		}
	}
	return ProxyInfo{}, false
}

// ProxyInfo names one connected proxy's identity and enrolment.
type ProxyInfo struct {
	ID, SPIFFEID, Enrolment string
}

// closeRevokedStreams closes this replica's xDS streams of revoked proxies
// now (rather than at the next sweep) and returns how many.
func (cp *ControlPlane) closeRevokedStreams(ctx context.Context) int {
	n, err := cp.guard.sweep(context.WithoutCancel(ctx))
	if err != nil {
		cp.logger.Warn("cannot check open xDS streams against revocations", "error", err)
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
// check it, and the guard that closes revoked proxies' xDS streams.
func (cp *ControlPlane) setUpRevocation() {
	cp.revocations = ca.NewRevocations(cp.store, cp.tokens, nil)
	cp.caService.SetRevocations(cp.revocations)
	cp.guard = newStreamGuard(cp.ca, cp.revocations, cp.logger.With("component", "revocation"))
}
