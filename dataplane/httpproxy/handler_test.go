package httpproxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// echo is what the echo backend reports about the request it received.
type echo struct {
	Backend string      `json:"backend"`
	Proto   string      `json:"proto"`
	Method  string      `json:"method"`
	URI     string      `json:"uri"`
	Host    string      `json:"host"`
	Header  http.Header `json:"header"`
	Body    string      `json:"body"`
}

// newEcho starts a backend that answers with an echo of the request, with
// response header X-Backend: name.
func newEcho(t testing.TB, name string, h2c bool) *httptest.Server {
	t.Helper()
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("X-Backend", name)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(echo{
			Backend: name, Proto: r.Proto, Method: r.Method, URI: r.RequestURI,
			Host: r.Host, Header: r.Header, Body: string(body),
		})
	}))
	if h2c {
		enableH2C(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return srv
}

func enableH2C(s *http.Server) {
	s.Protocols = new(http.Protocols)
	s.Protocols.SetHTTP1(true)
	s.Protocols.SetUnencryptedHTTP2(true)
}

// newBackend starts a backend with a custom handler.
func newBackend(t testing.TB, h http.HandlerFunc) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

// clusterFor builds a STATIC cluster whose endpoints are the given addresses.
func clusterFor(t testing.TB, name string, h2c bool, addrs ...string) *upstream.Cluster {
	t.Helper()
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		host, portStr, err := net.SplitHostPort(a)
		if err != nil {
			t.Fatal(err)
		}
		port, _ := strconv.Atoi(portStr)
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)},
			}}},
		}}})
	}
	c := &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC},
		ConnectTimeout:       durationpb.New(time.Second),
		LoadAssignment: &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{
			{LbEndpoints: lbs},
		}},
	}
	if h2c {
		opts, err := anypb.New(&httpv3.HttpProtocolOptions{
			UpstreamProtocolOptions: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_{ExplicitHttpConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{Http2ProtocolOptions: &corev3.Http2ProtocolOptions{}},
			}},
		})
		if err != nil {
			t.Fatal(err)
		}
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": opts}
	}
	cl, err := upstream.NewCluster(c, nil)
	if err != nil {
		t.Fatalf("NewCluster: %v", err)
	}
	t.Cleanup(cl.Close)
	return cl
}

func addrOf(s *httptest.Server) string { return s.Listener.Addr().String() }

func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

func forwardTo(cluster string) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}
}

func table(t testing.TB, routes ...*routev3.Route) *router.Table {
	t.Helper()
	tbl, err := router.Compile(&routev3.RouteConfiguration{Name: "test", VirtualHosts: []*routev3.VirtualHost{
		{Name: "all", Domains: []string{"*"}, Routes: routes},
	}}, nil)
	if err != nil {
		t.Fatalf("Compile: %v", err)
	}
	return tbl
}

// startProxy serves a handler with cfg on a loopback listener (h2c too when
// asked) and returns its base URL.
func startProxy(t testing.TB, cfg *Config, h2c bool) (*Handler, string) {
	t.Helper()
	h := NewHandler(nil)
	h.Store(cfg)
	srv := httptest.NewUnstartedServer(h)
	if h2c {
		enableH2C(srv.Config)
	}
	srv.Start()
	t.Cleanup(srv.Close)
	return h, srv.URL
}

type response struct {
	status  int
	header  http.Header
	trailer http.Header
	body    string
	echo    echo
}

func do(t testing.TB, client *http.Client, req *http.Request) response {
	t.Helper()
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read body: %v", err)
	}
	r := response{status: resp.StatusCode, header: resp.Header, trailer: resp.Trailer, body: string(body)}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(body, &r.echo); err != nil {
			t.Fatalf("decode echo %q: %v", body, err)
		}
	}
	return r
}

func get(t testing.TB, url string, headers ...string) response {
	t.Helper()
	req, err := http.NewRequestWithContext(context.Background(), "GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	if h := req.Header.Get("Host"); h != "" {
		req.Host = h
	}
	return do(t, noRedirectClient(), req)
}

func noRedirectClient() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{Proxy: nil, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Timeout:       10 * time.Second,
	}
}

func TestRoutingToBackends(t *testing.T) {
	t.Parallel()
	a, b := newEcho(t, "a", false), newEcho(t, "b", false)
	cfg := &Config{
		Routes: table(t,
			&routev3.Route{Match: prefix("/a"), Action: forwardTo("A")},
			&routev3.Route{Match: prefix("/b"), Action: forwardTo("B")},
		),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(a)), "B": clusterFor(t, "B", false, addrOf(b))},
	}
	_, base := startProxy(t, cfg, false)
	tests := []struct {
		path, wantBackend, wantURI string
	}{
		{"/a/x?q=1", "a", "/a/x?q=1"},
		{"/b", "b", "/b"},
		{"/a%2Fb", "a", "/a%2Fb"},
	}
	for _, tc := range tests {
		r := get(t, base+tc.path, "Host", "Example.com:8080")
		if r.status != 200 || r.echo.Backend != tc.wantBackend || r.echo.URI != tc.wantURI {
			t.Errorf("%s: status %d backend %q uri %q, want 200 %q %q", tc.path, r.status, r.echo.Backend, r.echo.URI, tc.wantBackend, tc.wantURI)
		}
		if r.echo.Host != "Example.com:8080" {
			t.Errorf("%s: upstream Host %q, want the client's", tc.path, r.echo.Host)
		}
	}
}

func TestWeightedSplit(t *testing.T) {
	t.Parallel()
	a, b := newEcho(t, "a", false), newEcho(t, "b", false)
	cfg := &Config{
		Routes: table(t, &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: "A", Weight: wrapperspb.UInt32(20)},
					{Name: "B", Weight: wrapperspb.UInt32(80)},
				},
			}},
		}}}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(a)), "B": clusterFor(t, "B", false, addrOf(b))},
	}
	_, base := startProxy(t, cfg, false)
	counts := map[string]int{}
	const n = 1000
	for range n {
		counts[get(t, base+"/").header.Get("X-Backend")]++
	}
	// Binomial(1000, 0.2): standard deviation ≈ 12.6; allow 5σ.
	if counts["a"] < 137 || counts["a"] > 263 || counts["a"]+counts["b"] != n {
		t.Fatalf("split = %v, want about a:200 b:800", counts)
	}
}

func TestRequestAndResponseRewrites(t *testing.T) {
	t.Parallel()
	a := newEcho(t, "a", false)
	add := func(k, v string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
		return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: k, Value: v}, AppendAction: action}
	}
	cfg := &Config{
		Routes: table(t,
			&routev3.Route{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_PathSeparatedPrefix{PathSeparatedPrefix: "/prefix/one"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier:     &routev3.RouteAction_Cluster{Cluster: "A"},
					PrefixRewrite:        "/one",
					HostRewriteSpecifier: &routev3.RouteAction_HostRewriteLiteral{HostRewriteLiteral: "internal.example"},
				}},
				RequestHeadersToAdd: []*corev3.HeaderValueOption{
					add("x-added", "yes", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD),
					add("x-existing", "new", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD),
				},
				RequestHeadersToRemove:  []string{"x-secret"},
				ResponseHeadersToAdd:    []*corev3.HeaderValueOption{add("x-served-by", "meshgate", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)},
				ResponseHeadersToRemove: []string{"x-backend"},
			},
			&routev3.Route{
				Match: prefix("/prefix"),
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "A"},
					RegexRewrite:     &matcherv3.RegexMatchAndSubstitute{Pattern: &matcherv3.RegexMatcher{Regex: `^/prefix/*`}, Substitution: "/"},
				}},
			},
		),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(a))},
	}
	_, base := startProxy(t, cfg, false)

	r := get(t, base+"/prefix/one/two?x=1", "X-Secret", "s", "X-Existing", "old")
	if r.echo.URI != "/one/two?x=1" || r.echo.Host != "internal.example" {
		t.Errorf("upstream saw %q host %q, want /one/two?x=1 host internal.example", r.echo.URI, r.echo.Host)
	}
	if r.echo.Header.Get("X-Added") != "yes" || r.echo.Header.Get("X-Secret") != "" || fmt.Sprint(r.echo.Header["X-Existing"]) != "[new]" {
		t.Errorf("upstream headers = %v", r.echo.Header)
	}
	if r.header.Get("X-Served-By") != "meshgate" || r.header.Get("X-Backend") != "" {
		t.Errorf("response headers = %v", r.header)
	}

	for path, want := range map[string]string{"/prefix/three": "/three", "/prefix": "/", "/prefix//x?y": "/x?y"} {
		if r := get(t, base+path); r.echo.URI != want {
			t.Errorf("%s: upstream saw %q, want %q", path, r.echo.URI, want)
		}
	}
}

func TestRedirectAndDirectResponse(t *testing.T) {
	t.Parallel()
	cfg := &Config{Routes: table(t,
		&routev3.Route{Match: prefix("/old/"), Action: &routev3.Route_Redirect{Redirect: &routev3.RedirectAction{
			SchemeRewriteSpecifier: &routev3.RedirectAction_SchemeRedirect{SchemeRedirect: "https"},
			HostRedirect:           "new.example.com",
			PathRewriteSpecifier:   &routev3.RedirectAction_PrefixRewrite{PrefixRewrite: "/new/"},
			ResponseCode:           routev3.RedirectAction_FOUND,
		}}},
		&routev3.Route{Match: prefix("/health"), Action: &routev3.Route_DirectResponse{DirectResponse: &routev3.DirectResponseAction{
			Status: 200, Body: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "ok\n"}},
		}}},
	)}
	_, base := startProxy(t, cfg, false)
	r := get(t, base+"/old/page?a=b")
	if r.status != 302 || r.header.Get("Location") != "https://new.example.com/new/page?a=b" {
		t.Errorf("redirect = %d %q", r.status, r.header.Get("Location"))
	}
	r = get(t, base+"/health")
	if r.status != 200 || r.body != "ok\n" || r.header.Get("Content-Type") != "text/plain; charset=utf-8" {
		t.Errorf("direct response = %d %q %q", r.status, r.body, r.header.Get("Content-Type"))
	}
}

// forwardWithNotFoundCode forwards to cluster, answering code when the
// proxy does not know it.
func forwardWithNotFoundCode(cluster string, code routev3.RouteAction_ClusterNotFoundResponseCode) *routev3.Route_Route {
	return &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier:            &routev3.RouteAction_Cluster{Cluster: cluster},
		ClusterNotFoundResponseCode: code,
	}}
}

// TestWeightedSplitWithUnknownCluster is the Gateway API's invalid
// backendRef: the share of a weighted entry whose cluster the proxy does not
// know gets cluster_not_found_response_code, the rest is forwarded.
func TestWeightedSplitWithUnknownCluster(t *testing.T) {
	t.Parallel()
	a := newEcho(t, "a", false)
	cfg := &Config{
		Routes: table(t, &routev3.Route{Match: prefix("/"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
			ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: &routev3.WeightedCluster{
				Clusters: []*routev3.WeightedCluster_ClusterWeight{
					{Name: "invalid-backend-cluster", Weight: wrapperspb.UInt32(1)},
					{Name: "A", Weight: wrapperspb.UInt32(1)},
				},
			}},
			ClusterNotFoundResponseCode: routev3.RouteAction_INTERNAL_SERVER_ERROR,
		}}}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(a))},
	}
	_, base := startProxy(t, cfg, false)
	counts := map[int]int{}
	const n = 400
	for range n {
		r := get(t, base+"/")
		if r.status == 200 && r.echo.Backend != "a" {
			t.Fatalf("200 from %q, want a", r.echo.Backend)
		}
		counts[r.status]++
	}
	// Binomial(400, 0.5): standard deviation 10; allow 5σ.
	if counts[500] < 150 || counts[500] > 250 || counts[500]+counts[200] != n {
		t.Fatalf("statuses = %v, want about 500:200 200:200", counts)
	}
}

func TestLocalReplies(t *testing.T) {
	t.Parallel()
	slow := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // answers only after the proxy gives up
	})
	broken := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			conn.Close() // no response at all
		}
	})
	// A port nothing listens on: bind, note, close.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedAddr := ln.Addr().String()
	ln.Close()

	empty, err := upstream.NewCluster(&clusterv3.Cluster{
		Name:                 "empty",
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
			ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		}},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &Config{
		Routes: table(t,
			&routev3.Route{Match: prefix("/missing"), Action: forwardTo("missing")},
			&routev3.Route{Match: prefix("/notfound404"), Action: forwardWithNotFoundCode("missing", routev3.RouteAction_NOT_FOUND)},
			&routev3.Route{Match: prefix("/notfound500"), Action: forwardWithNotFoundCode("missing", routev3.RouteAction_INTERNAL_SERVER_ERROR)},
			&routev3.Route{Match: prefix("/notfound503"), Action: forwardWithNotFoundCode("missing", routev3.RouteAction_SERVICE_UNAVAILABLE)},
			&routev3.Route{Match: prefix("/empty"), Action: forwardTo("empty")},
			&routev3.Route{Match: prefix("/refused"), Action: forwardTo("refused")},
			&routev3.Route{Match: prefix("/slow"), Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "slow"}, Timeout: durationpb.New(50 * time.Millisecond),
			}}},
			&routev3.Route{Match: prefix("/broken"), Action: forwardTo("broken")},
		),
		Clusters: map[string]*upstream.Cluster{
			"empty":   empty,
			"refused": clusterFor(t, "refused", false, closedAddr),
			"slow":    clusterFor(t, "slow", false, addrOf(slow)),
			"broken":  clusterFor(t, "broken", false, addrOf(broken)),
		},
	}
	_, base := startProxy(t, cfg, false)
	tests := []struct {
		path   string
		status int
		body   string
	}{
		{"/nothing-here", 404, "no route\n"},
		{"/missing", 503, "cluster not found\n"},
		{"/notfound404", 404, "cluster not found\n"},
		{"/notfound500", 500, "cluster not found\n"},
		{"/notfound503", 503, "cluster not found\n"},
		{"/empty", 503, "no healthy upstream\n"},
		{"/refused", 503, "upstream connect error\n"},
		{"/slow", 504, "upstream request timeout\n"},
		{"/broken", 502, "bad gateway\n"},
	}
	for _, tc := range tests {
		t.Run(strings.TrimPrefix(tc.path, "/"), func(t *testing.T) {
			t.Parallel()
			r := get(t, base+tc.path)
			if r.status != tc.status || r.body != tc.body {
				t.Errorf("got %d %q, want %d %q", r.status, r.body, tc.status, tc.body)
			}
		})
	}
	t.Run("no config", func(t *testing.T) {
		t.Parallel()
		rec := httptest.NewRecorder()
		NewHandler(nil).ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != 404 || rec.Body.String() != "no route\n" {
			t.Errorf("got %d %q", rec.Code, rec.Body)
		}
	})
}

func TestForwardedHeaders(t *testing.T) {
	t.Parallel()
	a := newEcho(t, "a", false)
	tests := []struct {
		name             string
		useRemoteAddress bool
		headers          []string
		wantXFF, wantXFP string
	}{
		{"no prior headers", false, nil, "127.0.0.1", "http"},
		{"appends and keeps XFP", false, []string{"X-Forwarded-For", "203.0.113.9", "X-Forwarded-Proto", "https"}, "203.0.113.9, 127.0.0.1", "https"},
		{"several XFF lines", false, []string{"X-Forwarded-For", "1.1.1.1", "X-Forwarded-For", "2.2.2.2"}, "1.1.1.1, 2.2.2.2, 127.0.0.1", "http"},
		{"edge overwrites XFP", true, []string{"X-Forwarded-Proto", "https"}, "127.0.0.1", "http"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, base := startProxy(t, &Config{
				Routes:           table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
				Clusters:         map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(a))},
				UseRemoteAddress: tc.useRemoteAddress,
			}, false)
			r := get(t, base+"/", tc.headers...)
			if got := strings.Join(r.echo.Header["X-Forwarded-For"], "|"); got != tc.wantXFF {
				t.Errorf("X-Forwarded-For = %q, want %q", got, tc.wantXFF)
			}
			if got := strings.Join(r.echo.Header["X-Forwarded-Proto"], "|"); got != tc.wantXFP {
				t.Errorf("X-Forwarded-Proto = %q, want %q", got, tc.wantXFP)
			}
		})
	}
}

func TestHopByHopHeadersRemoved(t *testing.T) {
	t.Parallel()
	var seen atomic.Pointer[http.Header]
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Clone()
		seen.Store(&h)
		w.Header().Set("Connection", "X-Upstream-Hop")
		w.Header().Set("X-Upstream-Hop", "1")
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("Upgrade", "h2c")
		w.Header().Set("X-End-To-End", "kept")
	})
	_, base := startProxy(t, &Config{
		Routes:   table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
	}, false)
	r := get(t, base+"/",
		"Connection", "X-Client-Hop, keep-alive",
		"X-Client-Hop", "1",
		"Keep-Alive", "timeout=5",
		"Proxy-Connection", "keep-alive",
		"Proxy-Authorization", "Basic Zm9vOmJhcg==",
		"Te", "trailers, deflate;q=0.5",
		"Upgrade", "websocket",
		"X-End-To-End", "kept",
	)
	if r.status != 200 {
		t.Fatalf("status %d", r.status)
	}
	up := *seen.Load()
	for _, k := range []string{"Connection", "X-Client-Hop", "Keep-Alive", "Proxy-Connection", "Proxy-Authorization", "Upgrade"} {
		if v, ok := up[k]; ok {
			t.Errorf("upstream received hop-by-hop %s: %v", k, v)
		}
	}
	if up.Get("Te") != "trailers" || up.Get("X-End-To-End") != "kept" {
		t.Errorf("upstream TE %q X-End-To-End %q, want trailers and kept", up.Get("Te"), up.Get("X-End-To-End"))
	}
	for _, k := range []string{"X-Upstream-Hop", "Keep-Alive", "Proxy-Authenticate", "Upgrade"} {
		if v, ok := r.header[k]; ok {
			t.Errorf("client received hop-by-hop %s: %v", k, v)
		}
	}
	if r.header.Get("X-End-To-End") != "kept" {
		t.Errorf("client lost X-End-To-End")
	}
}

func h2cClient() *http.Client {
	tr := &http.Transport{Proxy: nil}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func TestH2CEndToEndWithTrailers(t *testing.T) {
	t.Parallel()
	// A gRPC-like backend: streamed body, then trailers it did not announce.
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != 2 {
			http.Error(w, "want HTTP/2, got "+r.Proto, http.StatusHTTPVersionNotSupported)
			return
		}
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/grpc")
		w.WriteHeader(200)
		fmt.Fprintf(w, "te=%s body=%s", r.Header.Get("Te"), body)
		w.(http.Flusher).Flush()
		w.Header().Set(http.TrailerPrefix+"Grpc-Status", "0")
		w.Header().Set(http.TrailerPrefix+"Grpc-Message", "fine")
	}))
	enableH2C(backend.Config)
	backend.Start()
	t.Cleanup(backend.Close)

	_, base := startProxy(t, &Config{
		Routes:   table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("grpc")}),
		Clusters: map[string]*upstream.Cluster{"grpc": clusterFor(t, "grpc", true, addrOf(backend))},
	}, true)
	client := h2cClient()
	for range 3 {
		req, _ := http.NewRequestWithContext(context.Background(), "POST", base+"/pkg.Service/Method", strings.NewReader("ping"))
		req.Header.Set("Te", "trailers")
		req.Header.Set("Content-Type", "application/grpc")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "te=trailers body=ping" {
			t.Fatalf("got %s %d %q", resp.Proto, resp.StatusCode, body)
		}
		if resp.Trailer.Get("Grpc-Status") != "0" || resp.Trailer.Get("Grpc-Message") != "fine" {
			t.Fatalf("trailers = %v", resp.Trailer)
		}
	}
}

func TestStreamingResponseIsFlushed(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "first\n")
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "second\n")
	})
	_, base := startProxy(t, &Config{
		Routes:   table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
	}, false)
	resp, err := noRedirectClient().Get(base + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "first\n" {
		t.Fatalf("first chunk %q, %v: the proxy did not flush it", buf, err)
	}
	close(release)
	rest, _ := io.ReadAll(resp.Body)
	if string(rest) != "second\n" {
		t.Fatalf("rest %q", rest)
	}
}

func TestStoreSwapDuringRequests(t *testing.T) {
	t.Parallel()
	a, b := newEcho(t, "a", false), newEcho(t, "b", false)
	clusters := map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(a)), "B": clusterFor(t, "B", false, addrOf(b))}
	cfgA := &Config{Routes: table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}), Clusters: clusters}
	cfgB := &Config{Routes: table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("B")}), Clusters: clusters}
	h, base := startProxy(t, cfgA, false)

	client := noRedirectClient()
	var (
		wg       sync.WaitGroup
		stop     atomic.Bool
		requests atomic.Int64
		seen     sync.Map
	)
	for range 8 {
		wg.Go(func() {
			for !stop.Load() {
				resp, err := client.Get(base + "/")
				if err != nil {
					t.Errorf("request failed during swaps: %v", err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Errorf("status %d during swaps", resp.StatusCode)
					return
				}
				seen.Store(resp.Header.Get("X-Backend"), true)
				requests.Add(1)
			}
		})
	}
	// Swap until 2000 requests went through, both configurations among
	// them; at most a minute, for a loaded machine.
	bothSeen := func() bool {
		_, sawA := seen.Load("a")
		_, sawB := seen.Load("b")
		return sawA && sawB
	}
	deadline := time.Now().Add(time.Minute)
	for i := 0; (requests.Load() < 2000 || !bothSeen()) && time.Now().Before(deadline); i++ {
		if i%2 == 0 {
			h.Store(cfgB)
		} else {
			h.Store(cfgA)
		}
		time.Sleep(time.Millisecond) // pace the swaps, not synchronisation
	}
	stop.Store(true)
	wg.Wait()
	_, sawA := seen.Load("a")
	_, sawB := seen.Load("b")
	if !sawA || !sawB || requests.Load() == 0 {
		t.Fatalf("requests=%d sawA=%v sawB=%v: both configurations should have served", requests.Load(), sawA, sawB)
	}
}

func TestRequestBodyIsStreamedUpstream(t *testing.T) {
	t.Parallel()
	a := newEcho(t, "a", false)
	_, base := startProxy(t, &Config{
		Routes:   table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(a))},
	}, false)
	payload := strings.Repeat("x", 100_000)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = strings.NewReader(payload)
		if chunked {
			body = io.MultiReader(body) // unknown length
		}
		req, _ := http.NewRequestWithContext(context.Background(), "PUT", base+"/upload", body)
		r := do(t, noRedirectClient(), req)
		if r.status != 200 || r.echo.Method != "PUT" || r.echo.Body != payload {
			t.Errorf("chunked=%v: status %d method %q body %d bytes", chunked, r.status, r.echo.Method, len(r.echo.Body))
		}
	}
}

func BenchmarkProxy(b *testing.B) {
	backend := newBackend(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello, world\n")
	})
	h := NewHandler(nil)
	h.Store(&Config{
		Routes:   table(b, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(b, "A", false, addrOf(backend))},
	})
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			// The handler is driven directly so the benchmark counts the
			// proxy's allocations plus the upstream client's, not a
			// downstream server's.
			req := httptest.NewRequest("GET", "http://bench.local/path?x=1", nil)
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != 200 {
				b.Fatalf("status %d", rec.Code)
			}
		}
	})
}

// BenchmarkDirectBaseline is BenchmarkProxy's request sent straight to the
// backend with a pooled transport: the difference is the proxy's cost.
func BenchmarkDirectBaseline(b *testing.B) {
	backend := newBackend(b, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		io.WriteString(w, "hello, world\n")
	})
	cluster := clusterFor(b, "A", false, addrOf(backend))
	target := "http://" + addrOf(backend) + "/path?x=1"
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			req := httptest.NewRequest("GET", target, nil)
			req.RequestURI = ""
			rec := httptest.NewRecorder()
			resp, err := cluster.Transport().RoundTrip(req)
			if err != nil {
				b.Fatal(err)
			}
			for k, vv := range resp.Header {
				rec.Header()[k] = vv
			}
			rec.WriteHeader(resp.StatusCode)
			_, _ = io.Copy(rec, resp.Body)
			resp.Body.Close()
		}
	})
}

func TestTruncatedUpstreamBodyAbortsResponse(t *testing.T) {
	t.Parallel()
	backend := newBackend(t, func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer conn.Close()
		buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
		buf.Flush()
	})
	_, base := startProxy(t, &Config{
		Routes:   table(t, &routev3.Route{Match: prefix("/"), Action: forwardTo("A")}),
		Clusters: map[string]*upstream.Cluster{"A": clusterFor(t, "A", false, addrOf(backend))},
	}, false)
	resp, err := noRedirectClient().Get(base + "/")
	if err != nil {
		return // aborted before the (buffered) headers went out: also a broken response
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("client read a clean %d-byte body %q from a truncated upstream response, want an error", len(body), body)
	}
}
