package dataplane

import (
	"crypto/x509"
	"encoding/json"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/meshtls"
	"github.com/meshgate/meshgate/dataplane/xdsclient"
)

// adminHandler serves /ready, /app_health, /config_dump, /stats, /metrics,
// /clusters, /debug/pprof/ and POST /cache/purge.
func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	registerPprof(mux)
	mux.HandleFunc("GET /app_health", p.serveAppHealth)
	mux.HandleFunc("GET /clusters", p.serveClusters)
	mux.HandleFunc("POST /cache/purge", p.serveCachePurge)
	// Prometheus metrics, text or OpenMetrics (docs/observability.md).
	mux.Handle("GET /metrics", p.metrics.handler())
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if p.Draining() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("draining\n"))
			return
		}
		if !p.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: no listener configuration applied yet\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		body, err := p.configDump()
		if err != nil {
			http.Error(w, "config dump: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		out := map[string]any{
			"updates_accepted": p.stats.accepted.Load(),
			"updates_rejected": p.stats.rejected.Load(),
			"listeners":        len(p.servers),
			"clusters":         len(p.clusters),
			"secrets":          len(p.state.secrets),
		}
		if root := p.state.secrets[rootCASecretName]; root != nil && root.bundle != nil {
			out["trust_bundle_roots"] = len(root.bundle.Roots)
		}
		// The HTTP filters' counters over every listener, by family:
		// rbac_denied (requests denied, by policy)...
		for family, counters := range p.filterStats.Snapshot() {
			out[family] = counters
		}
		// Downstream connections: open by listener, and since the start
		// those shed or reclaimed at a listener's limit
		// (docs/operations.md, "Connection limits").
		active, idle := map[string]int{}, map[string]int{}
		for _, s := range p.servers {
			open, reclaimable := s.limiter.Counts()
			active[s.listener] += open
			idle[s.listener] += reclaimable
		}
		out["downstream_cx_active"] = active
		out["downstream_cx_idle"] = idle
		out["downstream_cx_limit"] = max(p.opts.MaxConnections, 0)
		out["downstream_cx_overflow"] = p.conns.shed.Load()
		out["downstream_cx_reclaimed"] = p.conns.reclaimed.Load()
		out["memory_releases"] = p.conns.relief.Releases()
		out["draining"] = p.Draining()
		// OpenTelemetry spans exported and dropped (docs/observability.md).
		out["tracing"] = p.tracingStats()
		// Access-log lines written and dropped (docs/observability.md).
		out["access_log"] = p.accessLogStats()
		p.mu.Unlock()
		if id := p.identitySummary(); id != nil {
			out["identity"] = id.SPIFFEID
			if id.NotAfter != nil {
				out["identity_cert_not_after"] = id.NotAfter.UTC().Format(time.RFC3339)
				out["identity_cert_expires_in_seconds"] = int64(time.Until(*id.NotAfter).Seconds())
			}
		}
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	return mux
}

// serveAppHealth answers GET /app_health from Options.AppHealth: 200 when
// the app is healthy, 503 when not, 404 when the proxy does not probe one.
func (p *Proxy) serveAppHealth(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if p.opts.AppHealth == nil {
		w.WriteHeader(http.StatusNotFound)
		_, _ = w.Write([]byte("no app health probe: a sidecar probes its app when it registers in Consul (--consul)\n"))
		return
	}
	healthy, detail := p.opts.AppHealth()
	if !healthy {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_, _ = w.Write([]byte(detail + "\n"))
}

// registerPprof serves the runtime profiles (net/http/pprof) under
// /debug/pprof/, to loopback peers only: the admin listener is meant to be
// bound to loopback, and a profile must not leak even when it is not.
func registerPprof(mux *http.ServeMux) {
	loopbackOnly := func(h http.HandlerFunc) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !fromLoopback(r.RemoteAddr) {
				http.Error(w, "profiles are served to loopback clients only", http.StatusForbidden)
				return
			}
			h(w, r)
		})
	}
	mux.Handle("GET /debug/pprof/", loopbackOnly(pprof.Index))
	mux.Handle("GET /debug/pprof/cmdline", loopbackOnly(pprof.Cmdline))
	mux.Handle("GET /debug/pprof/profile", loopbackOnly(pprof.Profile))
	mux.Handle("GET /debug/pprof/symbol", loopbackOnly(pprof.Symbol))
	mux.Handle("GET /debug/pprof/trace", loopbackOnly(pprof.Trace))
}

// fromLoopback reports whether remoteAddr ("ip:port") is a loopback address.
func fromLoopback(remoteAddr string) bool {
	host, _, err := net.SplitHostPort(remoteAddr)
	if err != nil {
		return false
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// ConfigDump is the JSON shape of GET /config_dump.
type ConfigDump struct {
	Node     json.RawMessage            `json:"node"`
	Versions map[string]string          `json:"versions"` // by type URL
	Accepted map[string]json.RawMessage `json:"resources"`
	Ready    bool                       `json:"ready"`
	Bound    map[string]string          `json:"listener_addresses"`
	// Secrets are the accepted SDS secrets: trust bundles, described by
	// their roots (never key material).
	Secrets []SecretSummary `json:"secrets,omitempty"`
	// Identity is the proxy's own identity; absent without one.
	Identity *IdentitySummary `json:"identity,omitempty"`
}

// SecretSummary describes one accepted secret: a trust bundle by its
// roots, a listener certificate by its subject, names and expiry (never
// its key).
type SecretSummary struct {
	Name  string         `json:"name"`
	Roots []meshtls.Root `json:"roots,omitempty"`
	// Certificate describes a listener certificate.
	Certificate *CertificateSummary `json:"certificate,omitempty"`
}

// CertificateSummary describes a listener certificate.
type CertificateSummary struct {
	Subject  string    `json:"subject"`
	DNSNames []string  `json:"dns_names,omitempty"`
	NotAfter time.Time `json:"not_after"`
}

// summary describes s, named name, for the config dump.
func (s *secretSpec) summary(name string) SecretSummary {
	out := SecretSummary{Name: name}
	switch {
	case s.cert != nil && s.cert.Leaf != nil:
		out.Certificate = &CertificateSummary{Subject: s.cert.Leaf.Subject.String(), DNSNames: s.cert.Leaf.DNSNames, NotAfter: s.cert.Leaf.NotAfter}
	case s.bundle != nil:
		out.Roots = s.bundle.Roots
	}
	return out
}

// IdentitySummary describes the proxy's identity and current certificate.
type IdentitySummary struct {
	SPIFFEID string `json:"spiffe_id"`
	// NotAfter is the expiry of the current certificate; nil before one was
	// issued.
	NotAfter *time.Time `json:"cert_not_after,omitempty"`
	// Serial is the current certificate's serial number, hex.
	Serial string `json:"cert_serial,omitempty"`
}

// identitySummary reads the identity provider; nil without one.
func (p *Proxy) identitySummary() *IdentitySummary {
	if p.opts.Identity == nil {
		return nil
	}
	out := &IdentitySummary{SPIFFEID: p.opts.Identity.SPIFFEID()}
	cert := p.opts.Identity.Certificate()
	if cert == nil || len(cert.Certificate) == 0 {
		return out
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return out
		}
	}
	notAfter := leaf.NotAfter
	out.NotAfter = &notAfter
	out.Serial = leaf.SerialNumber.Text(16)
	return out
}

// configDump renders the accepted resources (protojson) and versions per type.
func (p *Proxy) configDump() ([]byte, error) {
	p.mu.Lock()
	resources := map[string][]proto.Message{}
	for _, name := range sortedKeys(p.state.clusters) {
		resources[xdsclient.ClusterType] = append(resources[xdsclient.ClusterType], p.state.clusters[name])
	}
	for _, name := range sortedKeys(p.state.endpoints) {
		resources[xdsclient.EndpointType] = append(resources[xdsclient.EndpointType], p.state.endpoints[name])
	}
	for _, name := range sortedKeys(p.state.listeners) {
		resources[xdsclient.ListenerType] = append(resources[xdsclient.ListenerType], p.state.listeners[name].config)
	}
	for _, name := range sortedKeys(p.state.routes) {
		resources[xdsclient.RouteType] = append(resources[xdsclient.RouteType], p.state.routes[name].config)
	}
	dump := ConfigDump{
		Versions: make(map[string]string, len(p.state.versions)),
		Accepted: make(map[string]json.RawMessage, len(resources)),
		Ready:    p.Ready(),
		Bound:    make(map[string]string, len(p.servers)),
	}
	for k, v := range p.state.versions {
		dump.Versions[k] = v
	}
	for _, name := range sortedKeys(p.state.secrets) {
		dump.Secrets = append(dump.Secrets, p.state.secrets[name].summary(name))
	}
	for _, s := range p.servers {
		dump.Bound[s.listener] = s.ln.Addr().String()
	}
	p.mu.Unlock()
	dump.Identity = p.identitySummary()

	var err error
	if dump.Node, err = protojson.Marshal(p.opts.Node); err != nil {
		return nil, err
	}
	for typeURL, msgs := range resources {
		list := make([]json.RawMessage, 0, len(msgs))
		for _, m := range msgs {
			b, err := protojson.Marshal(m)
			if err != nil {
				return nil, err
			}
			list = append(list, b)
		}
		if dump.Accepted[typeURL], err = json.Marshal(list); err != nil {
			return nil, err
		}
	}
	return json.MarshalIndent(dump, "", "  ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
