// Package meshdns is a sidecar's DNS resolver: it answers the mesh
// services' names from the sidecar's current clusters and forwards every
// other query to the host's resolvers.
//
// The names and virtual IPs come from each cluster's service metadata
// (api/servicemeta, upstream.Cluster's ServiceVIP and Hostnames), swapped
// in whole on every cluster update and read without a lock. A known name
// is answered with its virtual IP (A; AAAA and other types get an empty
// NOERROR answer); a name under the mesh's DNS domain that no cluster
// knows gets NXDOMAIN; neither is ever forwarded. Everything else goes to
// the upstream resolvers over the protocol the query came on, with a
// timeout per upstream and a bound on the queries in flight. Until the
// sidecar has its first configuration every query is answered SERVFAIL.
package meshdns

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/meshgate/meshgate/dataplane/upstream"
)

// Defaults of Options.
const (
	// DefaultTTL is the TTL of the answers for mesh names: short, so an
	// application follows a service's address when it changes.
	DefaultTTL = 5 * time.Second
	// DefaultForwardTimeout bounds one exchange with one upstream.
	DefaultForwardTimeout = 2 * time.Second
	// DefaultResolvConf is where the host's resolvers are read from.
	DefaultResolvConf = "/etc/resolv.conf"
	// DefaultMaxInFlight bounds the forwarded queries waiting for an
	// upstream at a time; a query beyond it is answered SERVFAIL.
	DefaultMaxInFlight = 256
)

const (
	// maxUpstreams is the most upstream resolvers used (resolv.conf's
	// MAXNS), each tried in order for a query.
	maxUpstreams = 3
	// udpReadSize bounds an incoming UDP query (and the buffer an
	// upstream's UDP answer is read into).
	udpReadSize = 4096
	// ioTimeout bounds reading a query and writing an answer; tcpIdle how
	// long a TCP connection waits for its next query; tcpMaxQueries the
	// queries one TCP connection may send.
	ioTimeout     = 2 * time.Second
	tcpIdle       = 8 * time.Second
	tcpMaxQueries = 128
)

// Results of a query, the label of the queries metric.
const (
	ResultLocal     = "local"
	ResultForwarded = "forwarded"
	ResultFailed    = "failed"
)

// Options configure a Resolver.
type Options struct {
	// Listen is ip:port the resolver serves on, UDP and TCP; port 0 picks
	// one (the same for both). Required.
	Listen string
	// Namespace is the sidecar's namespace: a one-label name ("orders")
	// is a service of this namespace, as the sidecar's outbound routes
	// take it. Empty: "default".
	Namespace string
	// Upstreams are the resolvers other names are forwarded to, each an IP
	// or ip:port (port 53 when none); at most 3. Empty: the nameservers of
	// ResolvConf.
	Upstreams []string
	// ResolvConf is the resolv.conf read when Upstreams is empty;
	// DefaultResolvConf when empty.
	ResolvConf string
	// TTL of the answers for mesh names; DefaultTTL when zero.
	TTL time.Duration
	// ForwardTimeout bounds one exchange with one upstream;
	// DefaultForwardTimeout when zero.
	ForwardTimeout time.Duration
	// MaxInFlight bounds the forwarded queries at a time;
	// DefaultMaxInFlight when zero.
	MaxInFlight int
	// Ready, when set, reports whether the sidecar has its first
	// configuration: until it first returns true every query is answered
	// SERVFAIL (the client retries), so that no mesh name is forwarded
	// for want of knowing it. Nil: ready at once.
	Ready func() bool
	// Registerer, when set, gets the queries metric
	// (meshgate_proxy_dns_queries_total by result).
	Registerer prometheus.Registerer
	// Logger; discarded when nil.
	Logger *slog.Logger
}

// Resolver answers DNS for a sidecar's application. Create it with New,
// feed it clusters with SetClusters, serve it with Listen and Serve.
type Resolver struct {
	opts      Options
	upstreams []string
	ttl       uint32
	logger    *slog.Logger
	names     atomic.Pointer[nameTable]
	ready     atomic.Bool // latched once Options.Ready said so
	inFlight  chan struct{}
	queries   *prometheus.CounterVec
	counts    map[string]prometheus.Counter

	mu  sync.Mutex
	udp net.PacketConn
	tcp net.Listener
}

// New checks opts and returns a resolver that knows no mesh name yet;
// nothing is bound before Listen.
func New(opts Options) (*Resolver, error) {
	listen, err := netip.ParseAddrPort(opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("dns listen address %q: must be ip:port: %w", opts.Listen, err)
	}
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	if opts.ResolvConf == "" {
		opts.ResolvConf = DefaultResolvConf
	}
	if opts.TTL == 0 {
		opts.TTL = DefaultTTL
	}
	if opts.ForwardTimeout == 0 {
		opts.ForwardTimeout = DefaultForwardTimeout
	}
	if opts.MaxInFlight == 0 {
		opts.MaxInFlight = DefaultMaxInFlight
	}
	switch {
	case opts.TTL < time.Second:
		return nil, fmt.Errorf("dns TTL %s: must be at least 1s", opts.TTL)
	case opts.ForwardTimeout < 0:
		return nil, fmt.Errorf("dns forward timeout %s: must be positive", opts.ForwardTimeout)
	case opts.MaxInFlight < 0:
		return nil, fmt.Errorf("dns max in flight %d: must be positive", opts.MaxInFlight)
	}
	upstreams, err := upstreamsOf(opts)
	if err != nil {
		return nil, err
	}
	for _, u := range upstreams {
		if u == listen.String() {
			return nil, fmt.Errorf("dns upstream %s is the resolver's own address: queries would loop", u)
		}
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Resolver{
		opts:      opts,
		upstreams: upstreams,
		ttl:       uint32(opts.TTL / time.Second),
		logger:    opts.Logger,
		inFlight:  make(chan struct{}, opts.MaxInFlight),
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "meshgate_proxy_dns_queries_total",
			Help: "DNS queries of the application, by result: local (a mesh name, answered by the sidecar), forwarded (answered by an upstream resolver), failed (no upstream answered: SERVFAIL).",
		}, []string{"result"}),
	}
	r.counts = map[string]prometheus.Counter{}
	for _, res := range []string{ResultLocal, ResultForwarded, ResultFailed} {
		r.counts[res] = r.queries.WithLabelValues(res)
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(r.queries); err != nil {
			return nil, fmt.Errorf("dns metrics: %w", err)
		}
	}
	r.names.Store(&nameTable{})
	return r, nil
}

// upstreamsOf returns the upstream resolvers as ip:port.
func upstreamsOf(opts Options) ([]string, error) {
	given := opts.Upstreams
	source := "dns upstream"
	if len(given) == 0 {
		conf, err := dns.ClientConfigFromFile(opts.ResolvConf)
		if err != nil {
			return nil, fmt.Errorf("dns upstreams: reading %s: %w", opts.ResolvConf, err)
		}
		if len(conf.Servers) == 0 {
			return nil, fmt.Errorf("dns upstreams: %s names no nameserver (give --dns-upstream)", opts.ResolvConf)
		}
		for _, s := range conf.Servers {
			given = append(given, net.JoinHostPort(s, conf.Port))
		}
		source = opts.ResolvConf + ": nameserver"
	}
	if len(given) > maxUpstreams {
		if len(opts.Upstreams) > 0 {
			return nil, fmt.Errorf("dns upstreams: %d given, at most %d", len(given), maxUpstreams)
		}
		given = given[:maxUpstreams] // as the libc resolver does
	}
	out := make([]string, 0, len(given))
	for _, u := range given {
		ap, err := parseUpstream(u)
		if err != nil {
			return nil, fmt.Errorf("%s %q: %w", source, u, err)
		}
		out = append(out, ap.String())
	}
	return out, nil
}

// parseUpstream reads an IP or ip:port, port 53 by default.
func parseUpstream(s string) (netip.AddrPort, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		if ap.Port() == 0 {
			return netip.AddrPort{}, errors.New("port 0")
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
	addr, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.AddrPort{}, errors.New("must be an IP address or ip:port")
	}
	if addr.Zone() != "" {
		return netip.AddrPort{}, errors.New("IPv6 zones are not supported")
	}
	return netip.AddrPortFrom(addr.Unmap(), 53), nil
}

// Upstreams are the resolvers queries are forwarded to, ip:port, in order.
func (r *Resolver) Upstreams() []string { return slices.Clone(r.upstreams) }

// Queries returns how many queries had result (ResultLocal,
// ResultForwarded, ResultFailed).
func (r *Resolver) Queries(result string) int {
	c := r.counts[result]
	if c == nil {
		return 0
	}
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return int(m.GetCounter().GetValue())
}

// nameTable is the mesh names the resolver answers, built whole from the
// clusters and never modified after.
type nameTable struct {
	// hosts maps each name (lowercase, fully qualified) to the virtual IPs
	// of its service: usually one; none when the service has no VIP.
	hosts map[string][]netip.Addr
	// zones are the mesh DNS domains (fully qualified): a name in one that
	// hosts does not have gets NXDOMAIN, never forwarded.
	zones []string
	// ptr maps the reverse name of each VIP (in-addr.arpa) to the
	// service's fully qualified name, for PTR queries.
	ptr map[string]string
	// elsewhere are the one-label names of services of other namespaces
	// than the sidecar's: mesh names it does not resolve (NXDOMAIN), as
	// its outbound routes do not take them either.
	elsewhere map[string]bool
}

// entry is what the name table says of a name.
type entry struct {
	// addrs are the VIPs of a service name; ptr the service name of a
	// VIP's reverse name.
	addrs []netip.Addr
	ptr   string
	// known: the name is a service's (or a VIP's reverse name); mesh: the
	// name is the mesh's, known or not (then NXDOMAIN).
	known, mesh bool
}

// lookup says what the table knows of name (lowercase, fully qualified).
func (t *nameTable) lookup(name string) entry {
	if addrs, ok := t.hosts[name]; ok {
		return entry{addrs: addrs, known: true, mesh: true}
	}
	if ptr, ok := t.ptr[name]; ok {
		return entry{ptr: ptr, known: true, mesh: true}
	}
	if t.elsewhere[name] {
		return entry{mesh: true}
	}
	for _, z := range t.zones {
		if name == z || strings.HasSuffix(name, "."+z) {
			return entry{mesh: true}
		}
	}
	return entry{}
}

// SetClusters replaces the mesh names with those of clusters (the
// sidecar's live clusters): each cluster's Hostnames answer with its
// ServiceVIP, and the VIP's reverse name (PTR) with its fullest name. A one-label name is taken only from the services of the
// sidecar's namespace (another namespace's gets NXDOMAIN). It is the hook the sidecar's proxy calls on every
// cluster update; queries in flight finish with the table they started with.
func (r *Resolver) SetClusters(clusters map[string]*upstream.Cluster) {
	t := &nameTable{hosts: map[string][]netip.Addr{}, ptr: map[string]string{}, elsewhere: map[string]bool{}}
	zones := map[string]bool{}
	for _, c := range clusters {
		if len(c.Hostnames) == 0 {
			continue
		}
		namespace := ""
		for _, h := range c.Hostnames {
			// name.namespace.svc.<domain>: the service's namespace, and
			// the mesh's domain.
			if labels := dns.SplitDomainName(dns.CanonicalName(h)); len(labels) >= 4 && labels[2] == "svc" {
				namespace = labels[1]
				zones[dns.Fqdn(strings.Join(labels[3:], "."))] = true
			}
		}
		if c.ServiceVIP.IsValid() {
			// The reverse name answers with the longest (fullest) name.
			full := dns.CanonicalName(slices.MaxFunc(c.Hostnames, func(a, b string) int { return len(a) - len(b) }))
			if rev, err := dns.ReverseAddr(c.ServiceVIP.String()); err == nil {
				t.ptr[rev] = full
			}
		}
		for _, h := range c.Hostnames {
			name := dns.CanonicalName(h)
			if dns.CountLabel(name) == 1 && namespace != "" && namespace != r.opts.Namespace {
				t.elsewhere[name] = true
				continue
			}
			addrs := t.hosts[name]
			if c.ServiceVIP.IsValid() && !slices.Contains(addrs, c.ServiceVIP) {
				addrs = append(addrs, c.ServiceVIP)
			}
			t.hosts[name] = addrs
		}
	}
	for _, addrs := range t.hosts {
		slices.SortFunc(addrs, netip.Addr.Compare)
	}
	t.zones = slices.Sorted(maps.Keys(zones))
	r.names.Store(t)
}
