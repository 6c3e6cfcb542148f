package dataplane

import (
	"fmt"
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	tlsinspectorv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	tracingtypev3 "github.com/envoyproxy/go-control-plane/envoy/type/tracing/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/filters"
	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
	"github.com/meshgate/meshgate/dataplane/xdsclient"
)

func mustAny(tb testing.TB, m proto.Message) *anypb.Any {
	tb.Helper()
	a, err := anypb.New(m)
	if err != nil {
		tb.Fatal(err)
	}
	return a
}

// fuzzSeedListeners are valid listeners: plaintext with RDS and the RBAC
// filters, inline routes, STRICT and PERMISSIVE mTLS.
func fuzzSeedListeners(tb testing.TB) []*listenerv3.Listener {
	tb.Helper()
	rbacFilter := func(name string, action rbacconfigv3.RBAC_Action) *hcmv3.HttpFilter {
		cfg := &rbacv3.RBAC{Rules: &rbacconfigv3.RBAC{Action: action, Policies: map[string]*rbacconfigv3.Policy{"p": {
			Permissions: []*rbacconfigv3.Permission{{Rule: &rbacconfigv3.Permission_Any{Any: true}}},
			Principals: []*rbacconfigv3.Principal{{Identifier: &rbacconfigv3.Principal_DirectRemoteIp{
				DirectRemoteIp: &corev3.CidrRange{AddressPrefix: "10.0.0.0", PrefixLen: wrapperspb.UInt32(8)},
			}}},
		}}}}
		return &hcmv3.HttpFilter{Name: name, ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(tb, cfg)}}
	}
	router := &hcmv3.HttpFilter{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(tb, &routerv3.Router{})}}
	rds := &hcmv3.HttpConnectionManager{
		StatPrefix:                "edge",
		CodecType:                 hcmv3.HttpConnectionManager_AUTO,
		RouteSpecifier:            &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{ConfigSource: ads(), RouteConfigName: "edge"}},
		HttpFilters:               []*hcmv3.HttpFilter{rbacFilter("meshgate.rbac.deny", rbacconfigv3.RBAC_DENY), rbacFilter("meshgate.rbac.allow", rbacconfigv3.RBAC_ALLOW), router},
		UseRemoteAddress:          wrapperspb.Bool(true),
		RequestHeadersTimeout:     durationpb.New(5e9),
		NormalizePath:             wrapperspb.Bool(true),
		MergeSlashes:              true,
		StripPortMode:             &hcmv3.HttpConnectionManager_StripAnyHostPort{StripAnyHostPort: true},
		MaxRequestHeadersKb:       wrapperspb.UInt32(32),
		CommonHttpProtocolOptions: &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(0)},
	}
	inline := &hcmv3.HttpConnectionManager{
		StatPrefix: "inline",
		CodecType:  hcmv3.HttpConnectionManager_HTTP2,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{
			Name: "inline",
			VirtualHosts: []*routev3.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "web"}}},
			}}}},
		}},
		HttpFilters: []*hcmv3.HttpFilter{router},
	}
	address := func(host string, port uint32) *corev3.Address {
		return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
			Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: port},
		}}}
	}
	chain := func(hcm *hcmv3.HttpConnectionManager) *listenerv3.FilterChain {
		return &listenerv3.FilterChain{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(tb, hcm)},
		}}}
	}
	socket := &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: mustAny(tb, &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{{Name: "default"}},
			ValidationContextType:          &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: rootCARef()},
			AlpnProtocols:                  []string{"h2", "http/1.1"},
		},
	})}}

	plain := &listenerv3.Listener{Name: "edge", Address: address("127.0.0.1", 8080), FilterChains: []*listenerv3.FilterChain{chain(rds)}}
	inlined := &listenerv3.Listener{Name: "inline", Address: address("::1", 8081), FilterChains: []*listenerv3.FilterChain{chain(inline)}}
	strict := &listenerv3.Listener{Name: "strict", Address: address("0.0.0.0", 15006), FilterChains: []*listenerv3.FilterChain{chain(rds)}}
	strict.FilterChains[0].TransportSocket = socket
	permissive := &listenerv3.Listener{
		Name: "permissive", Address: address("0.0.0.0", 15007), TrafficDirection: corev3.TrafficDirection_INBOUND,
		FilterChains: []*listenerv3.FilterChain{chain(rds), chain(rds)},
		ListenerFilters: []*listenerv3.ListenerFilter{{
			Name: "envoy.filters.listener.tls_inspector", ConfigType: &listenerv3.ListenerFilter_TypedConfig{TypedConfig: mustAny(tb, &tlsinspectorv3.TlsInspector{})},
		}},
	}
	permissive.FilterChains[0].FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "tls"}
	permissive.FilterChains[0].TransportSocket = socket
	permissive.FilterChains[1].FilterChainMatch = &listenerv3.FilterChainMatch{TransportProtocol: "raw_buffer"}
	// Traced: the HttpConnectionManager's tracing with the OpenTelemetry
	// provider (docs/observability.md).
	traced := proto.Clone(inline).(*hcmv3.HttpConnectionManager)
	traced.Tracing = &hcmv3.HttpConnectionManager_Tracing{
		RandomSampling:  &typev3.Percent{Value: 1},
		OverallSampling: &typev3.Percent{Value: 100},
		CustomTags: []*tracingtypev3.CustomTag{{Tag: "meshgate.role", Type: &tracingtypev3.CustomTag_Literal_{
			Literal: &tracingtypev3.CustomTag_Literal{Value: "gateway"}}}},
		Provider: &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry", ConfigType: &tracev3.Tracing_Http_TypedConfig{
			TypedConfig: mustAny(tb, &tracev3.OpenTelemetryConfig{ServiceName: "edge", GrpcService: &corev3.GrpcService{
				TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "collector"}},
				Timeout:         durationpb.New(5e9),
			}}),
		}},
	}
	tracedListener := &listenerv3.Listener{Name: "traced", Address: address("127.0.0.1", 8082), FilterChains: []*listenerv3.FilterChain{chain(traced)}}
	// Logged: the HttpConnectionManager's access_log, the file access logger
	// with a json_format (docs/observability.md). Parsing opens no file.
	logged := proto.Clone(inline).(*hcmv3.HttpConnectionManager)
	format, err := structpb.NewStruct(map[string]any{"code": "%RESPONSE_CODE%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
		"denied_by": "%DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_effective_policy_id)%", "role": "gateway", "n": 1})
	if err != nil {
		tb.Fatal(err)
	}
	logged.AccessLog = []*accesslogv3.AccessLog{{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{
		TypedConfig: mustAny(tb, &filev3.FileAccessLog{Path: "/dev/stdout", AccessLogFormat: &filev3.FileAccessLog_LogFormat{
			LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: format}}}}),
	}}}
	loggedListener := &listenerv3.Listener{Name: "logged", Address: address("127.0.0.1", 8083), FilterChains: []*listenerv3.FilterChain{chain(logged)}}
	return []*listenerv3.Listener{plain, inlined, strict, permissive, tracedListener, loggedListener}
}

// testFilters is the registry of the proxy's built-in HTTP filters.
var testFilters = filters.Default()

// checkListener runs l through the LDS path of the proxy (the registry's
// check, then parseListener, then the subscriptions it leads to). A
// rejection must name the resource.
func checkListener(t *testing.T, l *listenerv3.Listener, haveIdentity bool) {
	want := fmt.Sprintf("listener %q", l.GetName())
	if err := testFilters.Check(l); err != nil {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error does not name the resource (%s): %v", want, err)
		}
		return
	}
	spec, err := parseListener(l, nil, parseEnv{filters: testFilters, haveIdentity: haveIdentity})
	if err != nil {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error does not name the resource (%s): %v", want, err)
		}
		return
	}
	if spec.rds == "" && spec.inline == nil {
		t.Fatal("accepted listener has neither RDS nor inline routes")
	}
	if spec.params.tls.mode != modePlaintext {
		p := &Proxy{}
		_, _ = p.serverTLSConfig(spec.params)
	}
	msgs := []proto.Message{l}
	_ = xdsclient.RouteNames(msgs)
	_ = xdsclient.SecretNames(msgs)
}

// FuzzParseListener feeds arbitrary bytes, decoded as a Listener, through
// the LDS path.
func FuzzParseListener(f *testing.F) {
	for _, l := range fuzzSeedListeners(f) {
		b, err := proto.Marshal(l)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, true)
	}
	f.Fuzz(func(t *testing.T, data []byte, haveIdentity bool) {
		l := &listenerv3.Listener{}
		if err := proto.Unmarshal(data, l); err != nil {
			return
		}
		checkListener(t, l, haveIdentity)
	})
}

// FuzzMutateListener mutates valid listeners field by field, into their
// HttpConnectionManager, RBAC and TLS typed configs, through the LDS path.
func FuzzMutateListener(f *testing.F) {
	seeds := fuzzSeedListeners(f)
	f.Add([]byte{0})
	f.Add([]byte{3, 1, 2, 3, 4, 5, 6, 7})
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		l := proto.Clone(seeds[int(data[0])%len(seeds)]).(*listenerv3.Listener)
		protofuzz.Mutate(l, data[1:])
		checkListener(t, l, true)
	})
}

// checkSecret runs s through the SDS path of the proxy.
func checkSecret(t *testing.T, s *tlsv3.Secret) {
	want := fmt.Sprintf("secret %q", s.GetName())
	err := xdscheck.Check(s)
	if err == nil {
		_, err = parseSecret(s)
	}
	if err != nil && !strings.Contains(err.Error(), want) {
		t.Fatalf("error does not name the resource (%s): %v", want, err)
	}
}

// FuzzParseSecret feeds arbitrary bytes, decoded as a Secret, and mutated
// valid trust bundles through the SDS path.
func FuzzParseSecret(f *testing.F) {
	ca := meshtlstest.NewCA(f, "meshgate.local")
	valid := &tlsv3.Secret{Name: "ROOTCA", Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
		TrustedCa: &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: ca.PEM}},
	}}}
	b, err := proto.Marshal(valid)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, false)
	f.Add([]byte{1, 2, 3}, true)
	f.Fuzz(func(t *testing.T, data []byte, mutate bool) {
		s := &tlsv3.Secret{}
		if mutate {
			s = proto.Clone(valid).(*tlsv3.Secret)
			protofuzz.Mutate(s, data)
		} else if err := proto.Unmarshal(data, s); err != nil {
			return
		}
		checkSecret(t, s)
	})
}

func TestFuzzSeedListenersParse(t *testing.T) {
	t.Parallel()
	for i, l := range fuzzSeedListeners(t) {
		if err := testFilters.Check(l); err != nil {
			t.Fatalf("seed %d: %v", i, err)
		}
		if _, err := parseListener(l, nil, parseEnv{filters: testFilters, haveIdentity: true}); err != nil {
			t.Errorf("seed %d: %v", i, err)
		}
	}
}
