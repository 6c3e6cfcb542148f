// Package upstream implements a proxy's upstream clusters: the endpoints of
// one Envoy v3 Cluster (from its STATIC load_assignment or from EDS), a
// lock-free weighted round-robin load balancer over them, and pooled
// keep-alive transports (HTTP/1.1 or h2c; mesh mTLS for the endpoints its
// transport_socket_matches select) shared by every request to the cluster. A Cluster lives across configuration changes: endpoints are
// swapped atomically while requests are in flight, and connections stay
// pooled.
package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/meshgate/meshgate/api/servicemeta"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Transport tuning. The route timeout governs a whole request, so there is no
// response header timeout here.
const (
	// DefaultConnectTimeout is Envoy's connect_timeout default.
	DefaultConnectTimeout = 5 * time.Second
	maxIdleConnsPerHost   = 1024
	idleConnTimeout       = 90 * time.Second
	tcpKeepAlive          = 30 * time.Second
	// maxSchedule bounds the weighted round-robin schedule; larger weight
	// sums are scaled down proportionally.
	maxSchedule = 4096
)

// protocolOptionsKey is the typed_extension_protocol_options key of the
// upstream HTTP protocol options.
const protocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// Protocol is the protocol a cluster speaks to its endpoints.
type Protocol uint8

const (
	// HTTP1 is HTTP/1.1 with keep-alive (the default).
	HTTP1 Protocol = iota + 1
	// H2C is HTTP/2 over cleartext TCP with prior knowledge.
	H2C
)

func (p Protocol) String() string {
	switch p {
	case HTTP1:
		return "HTTP/1.1"
	case H2C:
		return "h2c"
	}
	return "unknown"
}

// Cluster is a long-lived upstream cluster. All methods are safe for
// concurrent use.
type Cluster struct {
	// ServiceVIP is the virtual IPv4 address of the mesh service the
	// cluster belongs to and Hostnames the DNS names it answers to, from
	// metadata.filter_metadata["meshgate.dev/service"] (api/servicemeta):
	// invalid and empty for a cluster that says none. NewCluster sets them;
	// they are never modified after (read them without a lock).
	ServiceVIP netip.Addr
	Hostnames  []string

	name      string
	config    *clusterv3.Cluster
	protocol  Protocol
	transport *http.Transport // endpoints no match selects: plaintext, or TLS by the cluster's transport_socket
	fast      *h1Client       // the same for HTTP/1.1 endpoints, body-less requests; nil for h2c
	matches   []*tlsMatch     // transport_socket_matches, in order
	tls       TLS
	logger    *slog.Logger
	tlsLog    tlsFailureLog
	router    roundTripper
	stats     Stats
	// balancer is the lb_policy (lb.go).
	balancer balancer

	// breaker is circuit_breakers, outlier outlier_detection and health
	// health_checks; nil when not configured, at no cost. watched is set
	// when any is: the cluster then counts each endpoint's requests and
	// routes only to available endpoints.
	breaker *Breaker
	outlier *outlierDetector
	health  *healthChecker
	watched bool
	// stop ends the outlier detector's and health checker's goroutines.
	stop context.CancelFunc
	// refreshMu serializes refreshAvailable.
	refreshMu sync.Mutex

	endpoints atomic.Pointer[endpointSet]
	next      atomic.Uint64
}

// endpointSet is an immutable set of endpoints and its round-robin schedule.
type endpointSet struct {
	addresses []string // "ip:port", in CLA order
	schedule  []string // weighted round-robin order; empty when no endpoint
	// secure maps the endpoints a transport_socket_matches entry selects to
	// that entry; the others are plaintext. Nil when none.
	secure map[string]*tlsMatch
	// hosts are the endpoints' states, in the order of addresses, and
	// byAddress the same by address; weights their load_balancing_weight.
	hosts     []*host
	byAddress map[string]*host
	weights   []uint32
	// excluded are the endpoints discovery does not mark healthy, with
	// their health_status: they receive no traffic.
	excluded []ExcludedEndpoint
	// scheduleHosts is schedule as hosts, for a watched cluster (nil
	// otherwise); available counts the hosts that may receive traffic.
	scheduleHosts []*host
	available     atomic.Int64
	active        atomic.Pointer[[]string] // the available endpoints' schedule; nil: all (panic)
	// lb is the balancer's state (lb.go); nil for plain round robin.
	lb *lbState
	// priorities are the endpoints' priority levels (priority.go), nil
	// when they have one.
	priorities *priorityLevels
}

// ExcludedEndpoint is an endpoint that discovery does not mark healthy.
type ExcludedEndpoint struct {
	Address string
	Health  string // its health_status: UNHEALTHY, DRAINING, TIMEOUT, DEGRADED
}

// NewCluster builds a cluster from c, checked against the subset of
// docs/xds.md. STATIC clusters take their endpoints from load_assignment; EDS
// clusters have none until SetEndpoints. logger may be nil. A cluster with
// transport_socket_matches needs WithTLS.
func NewCluster(c *clusterv3.Cluster, logger *slog.Logger, opts ...Option) (*Cluster, error) {
	if c == nil {
		return nil, errors.New("nil cluster")
	}
	var options clusterOptions
	for _, o := range opts {
		o(&options)
	}
	if !options.checked {
		if err := xdscheck.Check(c); err != nil {
			return nil, err
		}
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cl := &Cluster{
		name:     c.GetName(),
		config:   c,
		protocol: HTTP1,
		logger:   logger.With("cluster", c.GetName()),
		tls:      options.tls,
		stats:    options.stats.withDefaults(),
	}
	cl.router.cluster = cl
	if cl.name == "" {
		return nil, errors.New("cluster: name: required")
	}
	errorf := func(format string, args ...any) error {
		return fmt.Errorf("cluster %q: "+format, append([]any{cl.name}, args...)...)
	}
	service, err := servicemeta.Parse(c.GetMetadata().GetFilterMetadata()[servicemeta.Key])
	if err != nil {
		return nil, errorf("metadata.filter_metadata: %w", err)
	}
	cl.ServiceVIP, cl.Hostnames = service.VIP, service.Hostnames

	if cl.breaker, err = newBreaker(cl.name, c.GetCircuitBreakers(), cl.stats); err != nil {
		return nil, errorf("%w", err)
	}
	if cl.outlier, err = newOutlierDetector(cl, c.GetOutlierDetection()); err != nil {
		return nil, errorf("%w", err)
	}
	if cl.health, err = newHealthChecker(cl, c.GetHealthChecks(), options.healthProbe); err != nil {
		return nil, errorf("%w", err)
	}
	cl.watched = cl.breaker != nil || cl.outlier != nil || cl.health != nil

	protocol, err := protocolOf(c)
	if err != nil {
		return nil, errorf("%w", err)
	}
	cl.protocol = protocol

	connectTimeout := DefaultConnectTimeout
	if d := c.GetConnectTimeout(); d != nil {
		if err := d.CheckValid(); err != nil || d.AsDuration() <= 0 {
			return nil, errorf("connect_timeout: %v must be a positive duration", d)
		}
		connectTimeout = d.AsDuration()
	}

	if cl.balancer, err = balancerOf(c); err != nil {
		return nil, errorf("%w", err)
	}
	idleTimeout, err := upstreamIdleTimeout(c, idleConnTimeout)
	if err != nil {
		return nil, errorf("%w", err)
	}
	backend, err := cl.buildBackendTLS()
	if err != nil {
		return nil, errorf("%w", err)
	}
	if backend != nil {
		cl.transport = cl.newBackendTLSTransport(backend, connectTimeout)
	} else {
		cl.transport = newTransport(protocol, connectTimeout)
	}
	cl.transport.IdleConnTimeout = idleTimeout
	cl.transport.DialContext = cl.countDials(cl.transport.DialContext)
	if protocol == HTTP1 {
		cl.fast = newH1Client(cl.transport.DialContext)
		cl.fast.idleTimeout = idleTimeout
	}
	if cl.matches, err = cl.buildMatches(connectTimeout); err != nil {
		return nil, errorf("%w", err)
	}

	set := &endpointSet{}
	switch c.GetType() {
	case clusterv3.Cluster_STATIC:
		if c.GetLoadAssignment() == nil {
			return nil, errorf("load_assignment: required for a STATIC cluster")
		}
		if set, err = cl.buildEndpoints(c.GetLoadAssignment(), "load_assignment."); err != nil {
			return nil, errorf("%w", err)
		}
	case clusterv3.Cluster_EDS:
		if c.GetEdsClusterConfig() == nil {
			return nil, errorf("eds_cluster_config: required for an EDS cluster")
		}
		if c.GetLoadAssignment() != nil {
			return nil, errorf("load_assignment: not supported for an EDS cluster")
		}
	default:
		return nil, errorf("type: %v not supported", c.GetType())
	}
	cl.endpoints.Store(set)
	cl.refreshAvailable()
	if cl.outlier != nil || cl.health != nil {
		ctx, cancel := context.WithCancel(context.Background())
		cl.stop = cancel
		if cl.outlier != nil {
			go cl.outlier.run(ctx)
		}
		if cl.health != nil {
			go cl.health.run(ctx)
		}
	}
	return cl, nil
}

// protocolOf reads typed_extension_protocol_options: HTTP/1.1 unless
// explicit_http_config selects http2_protocol_options.
func protocolOf(c *clusterv3.Cluster) (Protocol, error) {
	anyOpts, ok := c.GetTypedExtensionProtocolOptions()[protocolOptionsKey]
	if !ok {
		return HTTP1, nil
	}
	var opts httpv3.HttpProtocolOptions
	if err := anyOpts.UnmarshalTo(&opts); err != nil {
		return 0, fmt.Errorf("typed_extension_protocol_options[%q]: %w", protocolOptionsKey, err)
	}
	explicit := opts.GetExplicitHttpConfig()
	switch {
	case explicit.GetHttp2ProtocolOptions() != nil:
		return H2C, nil
	case explicit.GetHttpProtocolOptions() != nil:
		return HTTP1, nil
	}
	return 0, fmt.Errorf("typed_extension_protocol_options[%q]: explicit_http_config with http_protocol_options or http2_protocol_options is required", protocolOptionsKey)
}

func newTransport(protocol Protocol, connectTimeout time.Duration) *http.Transport {
	dialer := &net.Dialer{Timeout: connectTimeout, KeepAlive: tcpKeepAlive}
	protocols := new(http.Protocols)
	if protocol == H2C {
		protocols.SetUnencryptedHTTP2(true)
	} else {
		protocols.SetHTTP1(true)
	}
	return &http.Transport{
		Proxy:               nil, // never from the environment
		DialContext:         dialer.DialContext,
		MaxIdleConns:        0, // no global limit
		MaxIdleConnsPerHost: maxIdleConnsPerHost,
		IdleConnTimeout:     idleConnTimeout,
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
		Protocols:           protocols,
		WriteBufferSize:     32 << 10,
		ReadBufferSize:      32 << 10,
	}
}

// Name is the cluster's name.
func (c *Cluster) Name() string { return c.name }

// Config is the Cluster resource the cluster was built from. The caller must
// not modify it.
func (c *Cluster) Config() *clusterv3.Cluster { return c.config }

// Protocol is the protocol spoken to the endpoints.
func (c *Cluster) Protocol() Protocol { return c.protocol }

// Transport is the cluster's pooled transport; requests to any endpoint of
// the cluster share it. It sends a request whose URL host is an endpoint
// selected by transport_socket_matches over mesh mTLS, any other in
// plaintext (the URL scheme stays http).
func (c *Cluster) Transport() http.RoundTripper { return &c.router }

// roundTripper picks the transport of a request's endpoint.
type roundTripper struct{ cluster *Cluster }

func (rt *roundTripper) RoundTrip(r *http.Request) (*http.Response, error) {
	c := rt.cluster
	if secure := c.endpoints.Load().secure; secure != nil {
		if m := secure[r.URL.Host]; m != nil {
			return m.transport.RoundTrip(r)
		}
	}
	return c.transport.RoundTrip(r)
}

// RoundTrip sends r to its URL host, an endpoint of the cluster (over mTLS
// when transport_socket_matches select it), and returns the response; the
// caller must close its body. r must be a client request (RequestURI
// empty). timeout > 0 bounds the whole exchange, up to the end of the
// response body: past it, the error of RoundTrip or of a body Read wraps
// ErrTimeout. The exchange is aborted when r's context ends.
//
// Body-less HTTP/1.1 requests take a fast path: written and read on the
// caller's goroutine over connections pooled per endpoint, with no context
// derived per request. Others go through the cluster's http.Transport.
//
// The request is sent with the User-Agent it has, and none when it has
// none: Go's clients would add "Go-http-client/1.1" (or /2.0), so
// RoundTrip records the absence in r.Header as an entry without values.
func (c *Cluster) RoundTrip(r *http.Request, timeout time.Duration) (*http.Response, error) {
	if done := c.beginRequest(r.URL.Host); done != nil {
		return c.roundTripCounted(r, timeout, done)
	}
	return c.roundTrip(r, timeout)
}

func (c *Cluster) roundTrip(r *http.Request, timeout time.Duration) (*http.Response, error) {
	suppressDefaultUserAgent(r)
	var transport http.RoundTripper = c.transport
	fast := c.fast
	if secure := c.endpoints.Load().secure; secure != nil {
		if m := secure[r.URL.Host]; m != nil {
			transport, fast = m.transport, m.fast
		}
	}
	if c.watched {
		return c.watchedRoundTrip(r, timeout, transport, fast)
	}
	return sendOnce(r, timeout, transport, fast)
}

// watchedRoundTrip is RoundTrip for a watched cluster: it counts the
// endpoint's requests in flight and gives the outcome to outlier detection.
func (c *Cluster) watchedRoundTrip(r *http.Request, timeout time.Duration, transport http.RoundTripper, fast *h1Client) (*http.Response, error) {
	h := c.endpoints.Load().byAddress[r.URL.Host]
	if h == nil {
		return sendOnce(r, timeout, transport, fast)
	}
	h.activeRequests.Add(1)
	resp, err := sendOnce(r, timeout, transport, fast)
	h.activeRequests.Add(-1)
	if c.outlier != nil {
		c.outlier.record(r.Context(), h, resp, err)
	}
	return resp, err
}

// sendOnce sends r over fast (body-less HTTP/1.1) or transport.
func sendOnce(r *http.Request, timeout time.Duration, transport http.RoundTripper, fast *h1Client) (*http.Response, error) {
	if fast != nil && (r.Body == nil || r.Body == http.NoBody) {
		return fast.roundTrip(r, timeout)
	}
	if timeout <= 0 {
		return transport.RoundTrip(r)
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	resp, err := transport.RoundTrip(r.WithContext(ctx))
	if err != nil {
		timedOut := errors.Is(ctx.Err(), context.DeadlineExceeded) && r.Context().Err() == nil
		cancel()
		if timedOut {
			return nil, fmt.Errorf("%w: %w", ErrTimeout, err)
		}
		return nil, err
	}
	resp.Body = &timeoutBody{ReadCloser: resp.Body, ctx: ctx, parent: r.Context(), cancel: cancel}
	return resp, nil
}

// suppressDefaultUserAgent keeps Go's HTTP/1.1 and HTTP/2 clients from
// adding their default User-Agent to r: both send none for a User-Agent
// entry without a value. It allocates nothing when r has a User-Agent.
func suppressDefaultUserAgent(r *http.Request) {
	if r.Header == nil {
		r.Header = http.Header{"User-Agent": nil}
		return
	}
	if _, ok := r.Header["User-Agent"]; !ok {
		r.Header["User-Agent"] = nil
	}
}

// timeoutBody is a response body read under a route timeout context.
type timeoutBody struct {
	io.ReadCloser
	ctx, parent context.Context
	cancel      context.CancelFunc
}

func (b *timeoutBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && err != io.EOF && errors.Is(b.ctx.Err(), context.DeadlineExceeded) && b.parent.Err() == nil {
		err = fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return n, err
}

func (b *timeoutBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// Secure reports whether requests to endpoint ("ip:port") use mTLS.
func (c *Cluster) Secure(endpoint string) bool {
	return c.endpoints.Load().secure[endpoint] != nil
}

// SetEndpoints replaces the endpoints with those of cla, atomically: requests
// in flight keep the endpoint they picked. Endpoints whose health_status is
// not UNKNOWN or HEALTHY are left out; load_balancing_weight is honoured. On
// error the previous endpoints stay. It is CheckEndpoints' check,
// PrepareEndpoints, then UseEndpoints.
func (c *Cluster) SetEndpoints(cla *endpointv3.ClusterLoadAssignment) error {
	if cla == nil {
		return fmt.Errorf("cluster %q: nil cluster load assignment", c.name)
	}
	if err := xdscheck.Check(cla); err != nil {
		return err
	}
	e, err := c.PrepareEndpoints(cla)
	if err != nil {
		return err
	}
	c.UseEndpoints(e)
	return nil
}

// Endpoints is a ClusterLoadAssignment compiled for one cluster
// (PrepareEndpoints): immutable until that cluster uses it (UseEndpoints).
type Endpoints struct {
	cluster *Cluster
	set     *endpointSet
}

// PrepareEndpoints compiles cla, already checked (xdscheck), for c, without
// installing it: the proxy prepares an EDS update whole, and NACKs it,
// before it changes anything.
func (c *Cluster) PrepareEndpoints(cla *endpointv3.ClusterLoadAssignment) (*Endpoints, error) {
	if cla.GetClusterName() != c.name {
		return nil, fmt.Errorf("cluster load assignment %q: cluster_name does not match cluster %q", cla.GetClusterName(), c.name)
	}
	set, err := c.buildEndpoints(cla, "")
	if err != nil {
		return nil, fmt.Errorf("cluster load assignment %q: %w", cla.GetClusterName(), err)
	}
	return &Endpoints{cluster: c, set: set}, nil
}

// UseEndpoints installs e, prepared for c, atomically: requests in flight
// keep the endpoint they picked. Endpoints prepared for another cluster are
// ignored.
func (c *Cluster) UseEndpoints(e *Endpoints) {
	if e == nil || e.cluster != c {
		return
	}
	e.set.carrySince(c.endpoints.Load(), time.Now())
	c.endpoints.Store(e.set)
	c.refreshAvailable()
	if c.health != nil {
		select {
		case c.health.kick <- struct{}{}: // check new endpoints now
		default:
		}
	}
	c.forgetRemovedEndpoints(e.set)
	c.logger.Debug("endpoints updated", "endpoints", len(e.set.addresses), "schedule", len(e.set.schedule))
}

// CheckEndpoints reports whether cla, already checked (xdscheck), compiles
// (addresses, weights), for a cluster the proxy has not received yet: what
// PrepareEndpoints refuses for any cluster of that name.
func CheckEndpoints(cla *endpointv3.ClusterLoadAssignment) error {
	c := &Cluster{name: cla.GetClusterName()}
	_, err := c.PrepareEndpoints(cla)
	return err
}

// HasEndpoints reports whether the cluster has at least one endpoint that
// may receive traffic.
func (c *Cluster) HasEndpoints() bool { return len(c.endpoints.Load().schedule) > 0 }

// Endpoints returns the "ip:port" addresses that may receive traffic, in the
// order of the load assignment. The caller must not modify the slice.
func (c *Cluster) Endpoints() []string { return c.endpoints.Load().addresses }

// Next returns the next endpoint address ("ip:port") in weighted round-robin
// order, or false when the cluster has none. It takes no lock and does not
// allocate.
func (c *Cluster) Next() (string, bool) {
	set := c.endpoints.Load()
	if set.priorities != nil {
		return c.nextPriority(set, 0, false)
	}
	if set.lb != nil {
		return c.pick(set, 0, false)
	}
	schedule := set.schedule
	if len(schedule) == 0 {
		return "", false
	}
	n := c.next.Add(1) - 1
	if set.scheduleHosts != nil {
		return set.nextWatched(n), true
	}
	return schedule[n%uint64(len(schedule))], true
}

// Close closes the cluster's idle pooled connections and forgets its TLS
// sessions; requests in flight are not interrupted, and their connections
// close after the idle timeout. Call it once no route references the cluster
// any more.
func (c *Cluster) Close() {
	if c.stop != nil {
		c.stop()
	}
	c.closeIdle()
	for _, m := range c.matches {
		m.sessions.reset() // the next connection does a full handshake
	}
}

// closeIdle closes every idle connection of the cluster.
func (c *Cluster) closeIdle() {
	c.transport.CloseIdleConnections()
	if c.fast != nil {
		c.fast.closeIdle(nil)
	}
	for _, m := range c.matches {
		m.transport.CloseIdleConnections()
		if m.fast != nil {
			m.fast.closeIdle(nil)
		}
	}
}

// forgetRemovedEndpoints closes the fast-path pools of endpoints that left
// the cluster.
func (c *Cluster) forgetRemovedEndpoints(set *endpointSet) {
	keep := make(map[string]bool, len(set.addresses))
	for _, a := range set.addresses {
		keep[a] = true
	}
	if c.fast != nil {
		c.fast.closeIdle(keep)
	}
	for _, m := range c.matches {
		if m.fast != nil {
			m.fast.closeIdle(keep)
		}
	}
}

type weightedAddress struct {
	address string
	weight  uint64
}

func (c *Cluster) buildEndpoints(cla *endpointv3.ClusterLoadAssignment, fieldPrefix string) (*endpointSet, error) {
	var eligible []weightedAddress
	var priorities priorityCounts
	set := &endpointSet{}
	var prev map[string]*host
	if cur := c.endpoints.Load(); cur != nil {
		prev = cur.byAddress
	}
	for i, locality := range cla.GetEndpoints() {
		for j, lbe := range locality.GetLbEndpoints() {
			path := func() string { return fmt.Sprintf("%sendpoints[%d].lb_endpoints[%d]", fieldPrefix, i, j) }
			addr, err := endpointAddress(lbe)
			if err != nil {
				return nil, fmt.Errorf("%s.endpoint.address: %w", path(), err)
			}
			switch lbe.GetHealthStatus() {
			case corev3.HealthStatus_UNKNOWN, corev3.HealthStatus_HEALTHY:
			default:
				set.excluded = append(set.excluded, ExcludedEndpoint{Address: addr, Health: lbe.GetHealthStatus().String()})
				if err := priorities.count(locality.GetPriority(), -1); err != nil {
					return nil, fmt.Errorf("%sendpoints[%d].%w", fieldPrefix, i, err)
				}
				continue
			}
			if err := priorities.count(locality.GetPriority(), len(eligible)); err != nil {
				return nil, fmt.Errorf("%sendpoints[%d].%w", fieldPrefix, i, err)
			}
			weight := uint64(1)
			if w := lbe.GetLoadBalancingWeight(); w != nil {
				if w.GetValue() == 0 {
					return nil, fmt.Errorf("%s.load_balancing_weight: must be at least 1", path())
				}
				weight = uint64(w.GetValue())
			}
			if m := c.matchOf(lbe); m != nil {
				if set.secure == nil {
					set.secure = make(map[string]*tlsMatch)
				}
				if _, dup := set.secure[addr]; !dup {
					set.secure[addr] = m
				}
			}
			if _, dup := set.byAddress[addr]; !dup {
				h := c.hostFor(prev, addr)
				if set.byAddress == nil {
					set.byAddress = make(map[string]*host)
				}
				set.byAddress[addr] = h
				set.hosts = append(set.hosts, h)
				set.weights = append(set.weights, uint32(weight))
			}
			set.addresses = append(set.addresses, addr)
			eligible = append(eligible, weightedAddress{address: addr, weight: weight})
		}
	}
	set.schedule = schedule(eligible)
	set.lb = c.balancer.prepare(eligible)
	set.priorities = c.buildPriorities(set, eligible, &priorities)
	if c.watched && len(set.schedule) > 0 {
		set.scheduleHosts = make([]*host, len(set.schedule))
		for i, a := range set.schedule {
			set.scheduleHosts[i] = set.byAddress[a]
		}
		set.refresh()
	}
	return set, nil
}

func endpointAddress(lbe *endpointv3.LbEndpoint) (string, error) {
	sa := lbe.GetEndpoint().GetAddress().GetSocketAddress()
	if sa == nil {
		return "", errors.New("socket_address: required")
	}
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		return "", fmt.Errorf("socket_address.address: %q is not an IP address", sa.GetAddress())
	}
	port := sa.GetPortValue()
	if port == 0 || port > 65535 {
		return "", fmt.Errorf("socket_address.port_value: %d out of range", port)
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(uint64(port), 10)), nil
}

// schedule builds a smooth weighted round-robin order (nginx's algorithm):
// each endpoint appears in proportion to its weight, spread out. Weights
// are reduced by their GCD and scaled to at most maxSchedule slots (plus one
// per endpoint, as every endpoint keeps at least one slot).
//
// nginx's algorithm costs endpoints x slots; a large cluster (tens of
// thousands of endpoints, from one EDS response) must not stall the proxy, so
// equal weights take the order of the assignment (what nginx's algorithm
// yields for them) and large unequal ones earliest-deadline-first, which
// spreads them as smoothly in endpoints x log(endpoints).
func schedule(eps []weightedAddress) []string {
	order, _ := scheduleSteps(eps)
	return order
}

// scheduleSteps is schedule, also returning its cost in elementary steps
// (an endpoint's weight read, an endpoint visited for a slot, two slots
// compared): the count by which a test proves the cost linear, or
// endpoints x log(endpoints), in the endpoints, whatever the machine's
// speed.
func scheduleSteps(eps []weightedAddress) (order []string, steps uint64) {
	if len(eps) == 0 {
		return nil, 0
	}
	steps = 2 * uint64(len(eps)) // the two passes over the weights
	g := eps[0].weight
	var total uint64
	for _, e := range eps {
		g = gcd(g, e.weight)
		total += e.weight
	}
	weights := make([]uint64, len(eps))
	var sum uint64
	equal := true
	for i, e := range eps {
		w := e.weight / g
		if total/g > maxSchedule {
			w = max(1, e.weight*maxSchedule/total)
		}
		weights[i] = w
		sum += w
		equal = equal && w == weights[0]
	}
	order = make([]string, 0, sum)
	switch {
	case equal:
		for range weights[0] {
			for _, e := range eps {
				order = append(order, e.address)
			}
		}
		steps += sum
	case uint64(len(eps))*sum > maxSmoothWork:
		var comparisons uint64
		order, comparisons = earliestDeadlineFirst(eps, weights, sum, order)
		steps += sum + comparisons
	default:
		steps += uint64(len(eps)) * sum
		current := make([]int64, len(eps))
		for range sum {
			best := 0
			for i := range eps {
				current[i] += int64(weights[i])
				if current[i] > current[best] {
					best = i
				}
			}
			current[best] -= int64(sum)
			order = append(order, eps[best].address)
		}
	}
	return order, steps
}

// maxSmoothWork bounds endpoints x slots for nginx's algorithm.
const maxSmoothWork = 1 << 24

// earliestDeadlineFirst appends sum slots to order. Endpoint i's slots are
// due evenly over one round, k-th at (k-1+phase)/weights[i], its phase
// (i+1/2)/len(eps) staggering endpoints of equal weight; the earliest due
// goes first (ties: the earlier endpoint). It also returns the number of
// comparisons of two slots it made.
func earliestDeadlineFirst(eps []weightedAddress, weights []uint64, sum uint64, order []string) ([]string, uint64) {
	n := uint64(len(eps))
	type slot struct {
		endpoint int
		k        uint64 // the slot's number for its endpoint, from 1
	}
	// due is a slot's time as the fraction num/weight (scaled by 2n).
	num := func(s slot) uint64 { return 2*((s.k-1)*n+uint64(s.endpoint)) + 1 }
	var comparisons uint64
	before := func(a, b slot) bool {
		comparisons++
		l, r := num(a)*weights[b.endpoint], num(b)*weights[a.endpoint]
		return l < r || l == r && a.endpoint < b.endpoint
	}
	heap := make([]slot, len(eps))
	for i := range eps {
		heap[i] = slot{endpoint: i, k: 1}
	}
	down := func(i int) {
		for {
			least, l, r := i, 2*i+1, 2*i+2
			if l < len(heap) && before(heap[l], heap[least]) {
				least = l
			}
			if r < len(heap) && before(heap[r], heap[least]) {
				least = r
			}
			if least == i {
				return
			}
			heap[i], heap[least] = heap[least], heap[i]
			i = least
		}
	}
	for i := len(heap)/2 - 1; i >= 0; i-- {
		down(i)
	}
	for range sum {
		top := &heap[0]
		order = append(order, eps[top.endpoint].address)
		top.k++
		down(0)
	}
	return order, comparisons
}

func gcd(a, b uint64) uint64 {
	for b != 0 {
		a, b = b, a%b
	}
	return a
}
