package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/pprof"
	"strings"
	"time"

	"google.golang.org/grpc/peer"

	"github.com/meshgate/meshgate/controlplane/ca"
	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/controlplane/tokens"
)

// maxAdminBody bounds admin API request bodies.
const maxAdminBody = 64 << 10

// loadAdminToken reads the admin token from the store, creating it on first
// start.
func loadAdminToken(ctx context.Context, st state.Store) (string, error) {
	// Replicas sharing a store (Consul) must agree on one token: the first
	// creates it under the store's lock, the others read it.
	if l, ok := st.(state.Locker); ok {
		held, release, err := l.Lock(ctx, AdminTokenFile)
		if err != nil {
			return "", fmt.Errorf("admin token: lock: %w", err)
		}
		defer release()
		ctx = held
	}
	b, err := st.Get(ctx, AdminTokenFile)
	if err == nil {
		if tok := strings.TrimSpace(string(b)); tok != "" {
			return tok, nil
		}
	} else if !errors.Is(err, state.ErrNotFound) {
		return "", fmt.Errorf("admin token: %w", err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw[:])
	if err := st.Put(ctx, AdminTokenFile, []byte(tok+"\n")); err != nil {
		return "", fmt.Errorf("admin token: %w", err)
	}
	return tok, nil
}

func (cp *ControlPlane) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok"))
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, cp.status())
	})
	// Prometheus metrics, text or OpenMetrics (docs/observability.md).
	mux.Handle("GET /metrics", cp.metrics.handler())
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, r *http.Request) {
		id := r.URL.Query().Get("node")
		res, version, ok := cp.xds.Resources(id)
		if !ok {
			http.Error(w, fmt.Sprintf("no connected proxy with node id %q", id), http.StatusNotFound)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"node": id, "version": version, "resources": res})
	})
	mux.HandleFunc("POST /tokens", cp.handleCreateToken)
	mux.HandleFunc("GET /tokens", func(w http.ResponseWriter, r *http.Request) {
		list, err := cp.tokens.List(r.Context())
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"tokens": list})
	})
	mux.HandleFunc("DELETE /tokens/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := cp.tokens.Revoke(r.Context(), r.PathValue("id"))
		if errors.Is(err, tokens.ErrNotFound) {
			writeError(w, http.StatusNotFound, err)
			return
		}
		if err != nil {
			writeError(w, http.StatusInternalServerError, err)
			return
		}
		cp.logger.Info("join token revoked", "token", rec.ID, "service", rec.Service, "namespace", rec.Namespace)
		// The token's proxies are revoked with it: their renewals are
		// refused, and their connections (xDS streams) closed.
		writeJSON(w, http.StatusOK, RevokedToken{Record: rec, ClosedConnections: cp.closeRevoked(r.Context())})
	})
	mux.HandleFunc("POST /revocations", cp.handleRevoke)
	mux.HandleFunc("GET /revocations", cp.handleListRevocations)
	mux.HandleFunc("GET /ca", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, cp.ca.Status())
	})
	mux.HandleFunc("POST /ca/rotate", cp.handleRotate)
	mux.HandleFunc("GET /resources", cp.handleResources)
	mux.HandleFunc("GET /resources/{kind}/{namespace}/{name}", cp.handleResources)
	mux.HandleFunc("GET /consumers", cp.handleConsumers)
	registerPprof(mux)
	return cp.requireAdmin(mux)
}

// registerPprof serves the Go runtime profiles under /debug/pprof/ (behind
// the admin token like every other admin endpoint): /debug/pprof/profile for
// CPU, /debug/pprof/heap, /debug/pprof/goroutine...
func registerPprof(mux *http.ServeMux) {
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("POST /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
}

// requireAdmin checks the bearer token on everything but /healthz, unless
// the control plane runs in dev mode.
func (cp *ControlPlane) requireAdmin(next http.Handler) http.Handler {
	if cp.opts.Dev {
		return next
	}
	want := []byte(cp.adminToken)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			next.ServeHTTP(w, r)
			return
		}
		got, ok := bearerToken(r.Header.Get("Authorization"))
		if !ok || subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="meshgate"`)
			writeError(w, http.StatusUnauthorized, errors.New("missing or wrong admin token (Authorization: Bearer <token from <data-dir>/admin-token>)"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearerToken returns the credentials of an Authorization value of the
// Bearer scheme, whose name is case-insensitive (RFC 9110 section 11.1):
// "Bearer", "bearer" or "BEARER", then one or more spaces, then the token.
func bearerToken(authorization string) (string, bool) {
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

// CreateTokenRequest is the body of POST /tokens.
type CreateTokenRequest struct {
	Service   string `json:"service"`
	Namespace string `json:"namespace"`
	// TTL is a Go duration ("24h"); empty means 24h.
	TTL string `json:"ttl"`
}

// CreateTokenResponse is the answer to POST /tokens: the only time the
// token is shown.
type CreateTokenResponse struct {
	Token string `json:"token"`
	tokens.Record
}

func (cp *ControlPlane) handleCreateToken(w http.ResponseWriter, r *http.Request) {
	var req CreateTokenRequest
	if !decodeBody(w, r, &req) {
		return
	}
	var ttl time.Duration
	if req.TTL != "" {
		d, err := time.ParseDuration(req.TTL)
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Errorf("ttl: %w", err))
			return
		}
		ttl = d
	}
	tok, rec, err := cp.tokens.Create(r.Context(), req.Service, req.Namespace, ttl)
	if err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	cp.logger.Info("join token created", "token", rec.ID, "service", rec.Service, "namespace", rec.Namespace, "expires", rec.ExpiresAt)
	writeJSON(w, http.StatusCreated, CreateTokenResponse{Token: tok, Record: rec})
}

// RotateRequest is the body of POST /ca/rotate.
type RotateRequest struct {
	Step  ca.Step `json:"step"`
	Force bool    `json:"force"`
}

func (cp *ControlPlane) handleRotate(w http.ResponseWriter, r *http.Request) {
	var req RotateRequest
	if !decodeBody(w, r, &req) {
		return
	}
	_, ttl := cp.meshSettings()
	st, err := cp.ca.Rotate(r.Context(), req.Step, req.Force, ttl)
	switch {
	case errors.Is(err, ca.ErrRotationOrder), errors.Is(err, ca.ErrFinishTooEarly), errors.Is(err, ca.ErrOperatorRoot):
		writeError(w, http.StatusConflict, err)
		return
	case err != nil && strings.Contains(err.Error(), "unknown rotation step"):
		writeError(w, http.StatusBadRequest, err)
		return
	case err != nil:
		writeError(w, http.StatusInternalServerError, err)
		return
	}
	cp.xds.SetTrustBundle(context.WithoutCancel(r.Context()), cp.ca.TrustBundlePEM())
	writeJSON(w, http.StatusOK, st)
}

func decodeBody(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("request body: %w", err))
		return false
	}
	return true
}

// writeError answers {"error": "..."}.
func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	body, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = w.Write(append(body, '\n'))
}

func peerFromContext(ctx context.Context) (string, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return "", false
	}
	return p.Addr.String(), true
}
