package meshdns

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"github.com/miekg/dns"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/api/servicemeta"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// meshCluster is the cluster the control plane sends for a port of the
// service namespace/name with vip ("" for none).
func meshCluster(t *testing.T, namespace, name, vip string) *upstream.Cluster {
	t.Helper()
	svc := servicemeta.Service{Hostnames: servicemeta.Hostnames(namespace, name, servicemeta.DefaultDNSDomain)}
	if vip != "" {
		svc.VIP = netip.MustParseAddr(vip)
	}
	c, err := upstream.NewCluster(&clusterv3.Cluster{
		Name:                 namespace + "/" + name + ":80",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
			ResourceApiVersion:    corev3.ApiVersion_V3,
		}},
		Metadata: &corev3.Metadata{FilterMetadata: map[string]*structpb.Struct{servicemeta.Key: svc.Struct()}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func clusters(cs ...*upstream.Cluster) map[string]*upstream.Cluster {
	out := map[string]*upstream.Cluster{}
	for _, c := range cs {
		out[c.Name()] = c
	}
	return out
}

// fakeUpstream is a DNS server on a free loopback port, UDP and TCP, that
// answers every A query with answer (count records from 10.0.0.1 up) and
// counts the queries per protocol.
type fakeUpstream struct {
	addr     string
	udp, tcp atomic.Int64
	names    chan string // every name asked, when not nil
	// hold, when not nil, makes each query wait for a value (or the
	// test's end) before it is answered.
	hold chan struct{}
}

func startUpstream(t *testing.T, count int) *fakeUpstream {
	t.Helper()
	f := &fakeUpstream{names: make(chan string, 100)}
	// One port for UDP and TCP: a free UDP port whose TCP twin may be
	// taken, so a few tries.
	var pc net.PacketConn
	var ln net.Listener
	for try := 0; ln == nil; try++ {
		var err error
		if pc, err = net.ListenPacket("udp", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		if ln, err = net.Listen("tcp", pc.LocalAddr().String()); err != nil {
			pc.Close()
			if try == 20 {
				t.Fatalf("no port free for both UDP and TCP: %v", err)
			}
		}
	}
	f.addr = pc.LocalAddr().String()
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
			f.tcp.Add(1)
		} else {
			f.udp.Add(1)
		}
		select {
		case f.names <- req.Question[0].Name:
		default:
		}
		if f.hold != nil {
			select {
			case <-f.hold:
			case <-t.Context().Done():
			}
		}
		m := new(dns.Msg).SetReply(req)
		for i := range count {
			m.Answer = append(m.Answer, &dns.A{
				Hdr: dns.RR_Header{Name: req.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A:   net.IPv4(10, 0, byte(i/250), byte(i%250+1)),
			})
		}
		_ = w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		go func() { _ = s.ActivateAndServe() }()
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return f
}

// startResolver serves a resolver on a free port until the test ends.
func startResolver(t *testing.T, opts Options) *Resolver {
	t.Helper()
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:0"
	}
	r, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return r
}

// ask sends one query over network ("udp" or "tcp"), without EDNS0.
func ask(t *testing.T, network, server, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	client := &dns.Client{Net: network, Timeout: 30 * time.Second}
	resp, _, err := client.Exchange(m, server)
	if err != nil {
		t.Fatalf("%s query %s %s: %v", network, name, dns.TypeToString[qtype], err)
	}
	return resp
}

// answerAddrs are the addresses of m's A records and the names of its PTR
// records.
func answerAddrs(m *dns.Msg) []string {
	var out []string
	for _, rr := range m.Answer {
		switch rr := rr.(type) {
		case *dns.A:
			out = append(out, rr.A.String())
		case *dns.PTR:
			out = append(out, rr.Ptr)
		}
	}
	return out
}

// TestMeshNamesAnsweredLocally: every form of a mesh name is answered with
// the service's VIP over UDP and TCP, with the short TTL; AAAA is an empty
// NOERROR; an unknown name of the mesh domain, and another namespace's short
// name, are NXDOMAIN; a VIP's reverse name has the service's full name
// (PTR); none of them reaches the upstream.
func TestMeshNamesAnsweredLocally(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, 1)
	r := startResolver(t, Options{Upstreams: []string{up.addr}})
	r.SetClusters(clusters(
		meshCluster(t, "default", "orders", "240.240.1.2"),
		meshCluster(t, "shop", "cart", "240.240.3.4"),
	))
	cases := []struct {
		name  string
		qtype uint16
		rcode int
		want  []string
	}{
		{"orders.", dns.TypeA, dns.RcodeSuccess, []string{"240.240.1.2"}},
		{"orders.default.", dns.TypeA, dns.RcodeSuccess, []string{"240.240.1.2"}},
		{"orders.default.svc.meshgate.local.", dns.TypeA, dns.RcodeSuccess, []string{"240.240.1.2"}},
		{"ORDERS.Default.", dns.TypeA, dns.RcodeSuccess, []string{"240.240.1.2"}},
		{"cart.shop.", dns.TypeA, dns.RcodeSuccess, []string{"240.240.3.4"}},
		{"cart.shop.svc.meshgate.local.", dns.TypeA, dns.RcodeSuccess, []string{"240.240.3.4"}},
		{"orders.", dns.TypeAAAA, dns.RcodeSuccess, nil},
		{"orders.default.", dns.TypeTXT, dns.RcodeSuccess, nil},
		{"cart.", dns.TypeA, dns.RcodeNameError, nil}, // another namespace's short name
		{"nope.default.svc.meshgate.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"meshgate.local.", dns.TypeA, dns.RcodeNameError, nil},
		{"2.1.240.240.in-addr.arpa.", dns.TypePTR, dns.RcodeSuccess, []string{"orders.default.svc.meshgate.local."}},
		{"2.1.240.240.in-addr.arpa.", dns.TypeA, dns.RcodeSuccess, nil},
	}
	for _, network := range []string{"udp", "tcp"} {
		for _, tc := range cases {
			resp := ask(t, network, r.Addr(), tc.name, tc.qtype)
			got := answerAddrs(resp)
			if resp.Rcode != tc.rcode || strings.Join(got, ",") != strings.Join(tc.want, ",") || len(resp.Answer) != len(tc.want) {
				t.Errorf("%s %s %s: rcode %s, answer %v; want %s, %v", network, tc.name, dns.TypeToString[tc.qtype],
					dns.RcodeToString[resp.Rcode], resp.Answer, dns.RcodeToString[tc.rcode], tc.want)
			}
			if !resp.Authoritative {
				t.Errorf("%s %s: not authoritative", network, tc.name)
			}
			for _, rr := range resp.Answer {
				if rr.Header().Ttl != 5 {
					t.Errorf("%s %s: TTL %d; want 5", network, tc.name, rr.Header().Ttl)
				}
			}
		}
	}
	if n := up.udp.Load() + up.tcp.Load(); n != 0 {
		t.Errorf("the upstream was asked %d times; mesh names must never be forwarded", n)
	}
	if got, want := r.Queries(ResultLocal), 2*len(cases); got != want {
		t.Errorf("local queries %d; want %d", got, want)
	}
}

// TestForwardsOtherNames: other names go to the upstream over the
// protocol they came on, and its answer comes back.
func TestForwardsOtherNames(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, 1)
	r := startResolver(t, Options{Upstreams: []string{up.addr}})
	r.SetClusters(clusters(meshCluster(t, "default", "orders", "240.240.1.2")))
	for _, network := range []string{"udp", "tcp"} {
		resp := ask(t, network, r.Addr(), "example.com.", dns.TypeA)
		if resp.Rcode != dns.RcodeSuccess || strings.Join(answerAddrs(resp), ",") != "10.0.0.1" {
			t.Errorf("%s example.com: rcode %s answer %v; want the upstream's 10.0.0.1", network, dns.RcodeToString[resp.Rcode], resp.Answer)
		}
	}
	if up.udp.Load() != 1 || up.tcp.Load() != 1 {
		t.Errorf("upstream asked %d times over UDP, %d over TCP; want once each", up.udp.Load(), up.tcp.Load())
	}
	if r.Queries(ResultForwarded) != 2 || r.Queries(ResultLocal) != 0 {
		t.Errorf("forwarded %d, local %d; want 2, 0", r.Queries(ResultForwarded), r.Queries(ResultLocal))
	}
}

// TestTruncation: an answer too large for a UDP client comes back
// truncated (TC) within 512 bytes; the client's retry over TCP gets it
// whole; an EDNS0 client gets up to its buffer size.
func TestTruncation(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, 100) // 100 A records: about 1.6 KB
	r := startResolver(t, Options{Upstreams: []string{up.addr}})
	udp := ask(t, "udp", r.Addr(), "big.example.", dns.TypeA)
	udp.Compress = true // as it came on the wire
	if !udp.Truncated || udp.Len() > dns.MinMsgSize || len(udp.Answer) >= 100 {
		t.Errorf("UDP answer: TC=%v, %d bytes, %d records; want TC, at most 512 bytes", udp.Truncated, udp.Len(), len(udp.Answer))
	}
	tcp := ask(t, "tcp", r.Addr(), "big.example.", dns.TypeA)
	if tcp.Truncated || len(tcp.Answer) != 100 {
		t.Errorf("TCP answer: TC=%v, %d records; want all 100", tcp.Truncated, len(tcp.Answer))
	}
	m := new(dns.Msg).SetQuestion("big.example.", dns.TypeA)
	m.SetEdns0(4096, false)
	edns, _, err := (&dns.Client{Timeout: 30 * time.Second}).Exchange(m, r.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if edns.Truncated || len(edns.Answer) != 100 {
		t.Errorf("EDNS0 4096 UDP answer: TC=%v, %d records; want all 100", edns.Truncated, len(edns.Answer))
	}
}

// closedPort is a loopback address where nothing listens.
func closedPort(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := pc.LocalAddr().String()
	pc.Close()
	return addr
}

// TestUpstreamFailures: a dead upstream is skipped for the next; with none
// answering the query gets SERVFAIL and counts as failed.
func TestUpstreamFailures(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, 1)
	dead := closedPort(t)
	r := startResolver(t, Options{Upstreams: []string{dead, up.addr}})
	if resp := ask(t, "udp", r.Addr(), "example.com.", dns.TypeA); resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 1 {
		t.Errorf("with the first upstream dead: rcode %s, answer %v; want the second's answer", dns.RcodeToString[resp.Rcode], resp.Answer)
	}
	none := startResolver(t, Options{Upstreams: []string{dead}})
	for _, network := range []string{"udp", "tcp"} {
		if resp := ask(t, network, none.Addr(), "example.com.", dns.TypeA); resp.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s, no upstream answering: rcode %s; want SERVFAIL", network, dns.RcodeToString[resp.Rcode])
		}
	}
	if none.Queries(ResultFailed) != 2 {
		t.Errorf("failed queries %d; want 2", none.Queries(ResultFailed))
	}
}

// TestInFlightBound: beyond MaxInFlight forwarded queries the next one is
// answered SERVFAIL at once instead of waiting.
func TestInFlightBound(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, 1)
	up.hold = make(chan struct{})
	r := startResolver(t, Options{Upstreams: []string{up.addr}, MaxInFlight: 1})
	first := make(chan *dns.Msg, 1)
	go func() {
		m := new(dns.Msg).SetQuestion("slow.example.", dns.TypeA)
		resp, _, err := (&dns.Client{Net: "tcp", Timeout: 30 * time.Second}).Exchange(m, r.Addr())
		if err != nil {
			t.Errorf("the held query: %v", err)
		}
		first <- resp
	}()
	<-up.names // the first query is at the upstream, holding the one slot
	if resp := ask(t, "tcp", r.Addr(), "other.example.", dns.TypeA); resp.Rcode != dns.RcodeServerFailure {
		t.Errorf("a query beyond the bound: rcode %s; want SERVFAIL", dns.RcodeToString[resp.Rcode])
	}
	close(up.hold)
	if resp := <-first; resp == nil || resp.Rcode != dns.RcodeSuccess {
		t.Errorf("the held query's answer: %v", resp)
	}
	if resp := ask(t, "tcp", r.Addr(), "other.example.", dns.TypeA); resp.Rcode != dns.RcodeSuccess {
		t.Errorf("once the slot is free: rcode %s; want NOERROR", dns.RcodeToString[resp.Rcode])
	}
}

// TestSetClustersSwapsNames: a cluster update replaces the names whole: a
// new service resolves, a removed one is NXDOMAIN (its name is still the
// mesh's), a service without VIP has its names with an empty answer.
func TestSetClustersSwapsNames(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, 1)
	r := startResolver(t, Options{Upstreams: []string{up.addr}})
	orders := meshCluster(t, "default", "orders", "240.240.1.2")
	r.SetClusters(clusters(orders))
	if got := answerAddrs(ask(t, "udp", r.Addr(), "users.", dns.TypeA)); len(got) != 1 || got[0] != "10.0.0.1" {
		t.Errorf("users before it exists: %v; want it forwarded (no mesh name)", got)
	}
	r.SetClusters(clusters(meshCluster(t, "default", "users", "240.240.9.9"), meshCluster(t, "default", "novip", "")))
	if got := answerAddrs(ask(t, "udp", r.Addr(), "users.", dns.TypeA)); len(got) != 1 || got[0] != "240.240.9.9" {
		t.Errorf("users after the update: %v; want 240.240.9.9", got)
	}
	if resp := ask(t, "udp", r.Addr(), "orders.default.svc.meshgate.local.", dns.TypeA); resp.Rcode != dns.RcodeNameError {
		t.Errorf("orders after its removal: %s; want NXDOMAIN", dns.RcodeToString[resp.Rcode])
	}
	if resp := ask(t, "udp", r.Addr(), "novip.default.", dns.TypeA); resp.Rcode != dns.RcodeSuccess || len(resp.Answer) != 0 {
		t.Errorf("a service without VIP: %s %v; want NOERROR, no answer", dns.RcodeToString[resp.Rcode], resp.Answer)
	}
	if n := up.udp.Load(); n != 1 {
		t.Errorf("upstream asked %d times; want once (users before it existed)", n)
	}
}

// TestNotReady: until the sidecar has its configuration every query is
// SERVFAIL, none forwarded; once ready, it stays so.
func TestNotReady(t *testing.T) {
	t.Parallel()
	up := startUpstream(t, 1)
	var ready atomic.Bool
	r := startResolver(t, Options{Upstreams: []string{up.addr}, Ready: ready.Load})
	for _, name := range []string{"orders.", "example.com."} {
		if resp := ask(t, "udp", r.Addr(), name, dns.TypeA); resp.Rcode != dns.RcodeServerFailure {
			t.Errorf("%s before ready: %s; want SERVFAIL", name, dns.RcodeToString[resp.Rcode])
		}
	}
	if n := up.udp.Load(); n != 0 {
		t.Errorf("upstream asked %d times before ready; want none", n)
	}
	ready.Store(true)
	r.SetClusters(clusters(meshCluster(t, "default", "orders", "240.240.1.2")))
	if got := answerAddrs(ask(t, "udp", r.Addr(), "orders.", dns.TypeA)); len(got) != 1 {
		t.Errorf("orders once ready: %v", got)
	}
	ready.Store(false) // draining: still answering
	if resp := ask(t, "udp", r.Addr(), "example.com.", dns.TypeA); resp.Rcode != dns.RcodeSuccess {
		t.Errorf("after ready once: %s; want NOERROR", dns.RcodeToString[resp.Rcode])
	}
}

// TestLookupDoesNotAllocate: the lookup of a name allocates nothing (it
// runs for every query), whatever the table's size.
func TestLookupDoesNotAllocate(t *testing.T) {
	r, err := New(Options{Listen: "127.0.0.1:0", Upstreams: []string{"127.0.0.1:53"}})
	if err != nil {
		t.Fatal(err)
	}
	cs := map[string]*upstream.Cluster{}
	for i := range 50 {
		c := meshCluster(t, "default", fmt.Sprintf("svc%d", i), fmt.Sprintf("240.240.0.%d", i+1))
		cs[c.Name()] = c
	}
	r.SetClusters(cs)
	allocs := testing.AllocsPerRun(100, func() {
		r.names.Load().lookup("svc7.default.svc.meshgate.local.")
		r.names.Load().lookup("example.com.")
	})
	if allocs != 0 {
		t.Errorf("lookup allocates %v times; want 0", allocs)
	}
}

func TestNewErrors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.conf")
	if err := os.WriteFile(empty, []byte("search example.com\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{"no listen address", Options{Upstreams: []string{"127.0.0.1"}}, "dns listen address"},
		{"listen not ip:port", Options{Listen: "localhost:53", Upstreams: []string{"127.0.0.1"}}, "must be ip:port"},
		{"upstream is itself", Options{Listen: "127.0.0.1:15053", Upstreams: []string{"127.0.0.1:15053"}}, "queries would loop"},
		{"upstream not an address", Options{Listen: "127.0.0.1:0", Upstreams: []string{"dns.example"}}, `dns upstream "dns.example": must be an IP`},
		{"too many upstreams", Options{Listen: "127.0.0.1:0", Upstreams: []string{"1.1.1.1", "8.8.8.8", "9.9.9.9", "1.0.0.1"}}, "at most 3"},
		{"resolv.conf missing", Options{Listen: "127.0.0.1:0", ResolvConf: filepath.Join(dir, "none")}, "reading"},
		{"resolv.conf without nameserver", Options{Listen: "127.0.0.1:0", ResolvConf: empty}, "names no nameserver"},
	}
	for _, tc := range cases {
		if _, err := New(tc.opts); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: error %v; want one containing %q", tc.name, err, tc.wantErr)
		}
	}
}

// TestUpstreamsFromResolvConf: without Upstreams, the nameservers of
// resolv.conf (at most 3, port 53) are used.
func TestUpstreamsFromResolvConf(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "resolv.conf")
	conf := "search example.com\nnameserver 10.0.0.53\nnameserver fd00::53\nnameserver 10.0.0.54\nnameserver 10.0.0.55\n"
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r, err := New(Options{Listen: "127.0.0.1:0", ResolvConf: path})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(r.Upstreams(), " "); got != "10.0.0.53:53 [fd00::53]:53 10.0.0.54:53" {
		t.Errorf("upstreams %s", got)
	}
}
