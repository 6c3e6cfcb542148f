package translate

import (
	"fmt"
	"strings"
	"testing"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	apikeyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/api_key_auth/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tcpproxyv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/tcp_proxy/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshgate/meshgate/api/envoybootstrap"
	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/xdsnode"
)

// TestEnvoyRequirements translates every golden case for Envoy nodes (the
// case's nodes, as Envoys) and checks each node's resources, with the
// bootstrap `meshgate bootstrap envoy` writes for it, against what Envoy
// documents it requires (docs/interop.md lists them):
//
//   - every resource, and every typed config inside it, passes ValidateAll;
//   - every SdsSecretConfig has an sds_config: over ADS, naming a secret
//     the node receives, or through a static cluster of the bootstrap;
//   - every typed config is an Envoy type (envoy.*, registered with
//     go-control-plane), or sits in a filter marked is_optional, or is the
//     API key filter's fail-closed marker (EnvoyAPIKeyTypeURL), or one of the
//     meshgate filters that fail closed on an Envoy (request validation,
//     response limits: failsClosedOnEnvoy);
//   - no API key credential reaches an Envoy (a "sha256:<hex>" credential
//     would be a literal key to it);
//   - every cluster a route, a listener or a gRPC service names exists in
//     CDS or in the bootstrap, every RDS name in the route configurations;
//   - every EDS cluster takes its endpoints from ADS (eds_cluster_config),
//     every STATIC cluster has a load assignment;
//   - an "authenticated" principal only on a listener whose filter chain
//     has TLS (elsewhere Envoy has no peer certificate to match).
func TestEnvoyRequirements(t *testing.T) {
	t.Parallel()
	for _, c := range goldenCases(t) {
		t.Run(c.feature+"/"+c.name, func(t *testing.T) {
			t.Parallel()
			m, in, nodes := c.load(t)
			cache := NewCache(m, in)
			for _, node := range nodes {
				node.Envoy = true
				res, err := cache.Translate(node)
				if err != nil {
					t.Fatalf("Translate(%s): %v", node.ID, err)
				}
				boot := envoyBootstrapFor(t, node)
				for _, problem := range checkEnvoy(res, boot) {
					t.Errorf("node %s: %s", node.ID, problem)
				}
			}
		})
	}
}

// TestEnvoyCheckerCatches: the checker finds what a meshgate proxy's
// configuration has and an Envoy cannot use: the identity secret without
// sds_config, the API key hashes, a cluster no one defines.
func TestEnvoyCheckerCatches(t *testing.T) {
	t.Parallel()
	var c goldenCase
	for _, gc := range goldenCases(t) {
		if gc.feature == "envoy" {
			c = gc
		}
	}
	m, in, nodes := c.load(t)
	boot := envoyBootstrapFor(t, nodes[0])
	var problems []string
	for _, node := range nodes {
		node.Envoy = false // as a meshgate proxy receives it
		res, err := Translate(m, in, node)
		if err != nil {
			t.Fatal(err)
		}
		problems = append(problems, checkEnvoy(res, boot)...)
	}
	all := strings.Join(problems, "\n")
	for _, want := range []string{`secret "default" without sds_config`, "api key credential"} {
		if !strings.Contains(all, want) {
			t.Errorf("the checker does not report %q for a meshgate proxy's configuration; it reports:\n%s", want, all)
		}
	}
	broken := &Resources{Routes: []*routev3.RouteConfiguration{{Name: "r", VirtualHosts: []*routev3.VirtualHost{{
		Name: "v", Domains: []string{"*"}, Routes: []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "nowhere"}}},
		}},
	}}}}}
	if got := strings.Join(checkEnvoy(broken, boot), "\n"); !strings.Contains(got, `cluster "nowhere"`) {
		t.Errorf("a route to a missing cluster: %q", got)
	}
	// A meshgate filter that is not optional (and not one that fails
	// closed on purpose).
	filter, err := responseCacheFilter(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	filter.IsOptional = false
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "x", HttpFilters: []*hcmv3.HttpFilter{filter},
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{}}})
	if err != nil {
		t.Fatal(err)
	}
	strict := &Resources{Listeners: []*listenerv3.Listener{{Name: "l", FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}},
	}}}}}
	if got := strings.Join(checkEnvoy(strict, boot), "\n"); !strings.Contains(got, "not an Envoy type and not is_optional") {
		t.Errorf("a non-optional meshgate filter: %q", got)
	}
}

// TestNodeInfoEnvoy: an Envoy is told by its user agent.
func TestNodeInfoEnvoy(t *testing.T) {
	t.Parallel()
	meta := xdsnode.Metadata{Role: RoleSidecar, Service: "orders"}
	envoy := meta.Node("sidecar~orders~a")
	envoy.UserAgentName = "envoy"
	if !NodeInfoFromNode(envoy).Envoy {
		t.Error("user_agent_name envoy: not an Envoy node")
	}
	if NodeInfoFromNode(meta.Node("sidecar~orders~b")).Envoy {
		t.Error("a meshgate proxy (no user agent) taken for an Envoy")
	}
}

// envoyBootstrapFor is the bootstrap `meshgate bootstrap envoy` writes for
// node.
func envoyBootstrapFor(t *testing.T, node NodeInfo) *bootstrapv3.Bootstrap {
	t.Helper()
	meta := xdsnode.Metadata{Role: node.Role, Namespace: node.Namespace, Gateway: node.Gateway, Service: node.Service,
		InboundAddress: node.InboundAddress, AppAddress: node.AppAddress, OutboundAddress: node.OutboundAddress, OutboundTCP: node.OutboundTCP}
	b, err := envoybootstrap.Build(envoybootstrap.Options{
		NodeID: node.ID, Metadata: meta, ControlPlanes: []string{"127.0.0.1:15010"},
		ControlPlaneID: spiffeid.ControlPlane(spiffeid.DefaultTrustDomain).String(), SDSSocket: "/run/meshgate/sds.sock",
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// envoyCheck is the state of one node's check.
type envoyCheck struct {
	secrets        map[string]bool // served over ADS
	staticClusters map[string]bool
	clusters       map[string]bool // CDS and static
	routes         map[string]*routev3.RouteConfiguration
	problems       []string
}

func (c *envoyCheck) report(format string, args ...any) {
	c.problems = append(c.problems, fmt.Sprintf(format, args...))
}

// checkEnvoy returns what in res (with its bootstrap boot) an Envoy would
// refuse or evaluate differently.
func checkEnvoy(res *Resources, boot *bootstrapv3.Bootstrap) []string {
	c := &envoyCheck{secrets: map[string]bool{}, staticClusters: map[string]bool{}, clusters: map[string]bool{}, routes: map[string]*routev3.RouteConfiguration{}}
	for _, s := range res.Secrets {
		c.secrets[s.Name] = true
	}
	for _, cl := range boot.GetStaticResources().GetClusters() {
		c.staticClusters[cl.Name] = true
		c.clusters[cl.Name] = true
	}
	for _, cl := range res.Clusters {
		c.clusters[cl.Name] = true
	}
	for _, rc := range res.Routes {
		c.routes[rc.Name] = rc
	}
	for _, msg := range res.Messages() {
		name := msg.ProtoReflect().Descriptor().Name()
		if v, ok := msg.(interface{ ValidateAll() error }); ok {
			if err := v.ValidateAll(); err != nil {
				c.report("%s: ValidateAll: %v", name, err)
			}
		}
		c.walk(string(name), msg.ProtoReflect(), false)
	}
	for _, cl := range res.Clusters {
		c.checkCluster(cl)
	}
	for _, l := range res.Listeners {
		c.checkListener(l)
	}
	return c.problems
}

// walk visits every message under m (Anys unpacked); optional: m sits in
// a filter marked is_optional.
func (c *envoyCheck) walk(path string, m protoreflect.Message, optional bool) {
	switch msg := m.Interface().(type) {
	case *anypb.Any:
		c.checkAny(path, msg, optional)
		return
	case *hcmv3.HttpFilter:
		optional = optional || msg.IsOptional
	case *routev3.FilterConfig:
		optional = optional || msg.IsOptional
	case *tlsv3.SdsSecretConfig:
		c.checkSds(path, msg)
	case *apikeyv3.ApiKeyAuth:
		if len(msg.Credentials) > 0 {
			c.report("%s: api key credentials reach an Envoy (a hash would be a literal key)", path)
		}
	case *apikeyv3.ApiKeyAuthPerRoute:
		if len(msg.Credentials) > 0 {
			c.report("%s: api key credentials reach an Envoy (a hash would be a literal key)", path)
		}
	case *routev3.RouteAction:
		if name := msg.GetCluster(); name != "" {
			c.needCluster(path, name)
		}
		for _, w := range msg.GetWeightedClusters().GetClusters() {
			if w.Name != invalidBackendCluster { // on purpose: its share gets cluster_not_found_response_code
				c.needCluster(path, w.Name)
			}
		}
		for _, mirror := range msg.RequestMirrorPolicies {
			c.needCluster(path, mirror.Cluster)
		}
	case *tcpproxyv3.TcpProxy:
		if name := msg.GetCluster(); name != "" && name != invalidBackendCluster { // on purpose: Envoy closes the connection
			c.needCluster(path, name)
		}
		for _, w := range msg.GetWeightedClusters().GetClusters() {
			if w.Name != invalidBackendCluster {
				c.needCluster(path, w.Name)
			}
		}
	case *corev3.GrpcService_EnvoyGrpc:
		c.needCluster(path, msg.ClusterName)
	case *corev3.HttpUri:
		c.needCluster(path, msg.GetCluster())
	}
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		sub := path + "." + string(fd.Name())
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				c.walk(fmt.Sprintf("%s[%d]", sub, i), v.List().Get(i).Message(), optional)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				c.walk(sub+"["+k.String()+"]", mv.Message(), optional)
				return true
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			c.walk(sub, v.Message(), optional)
		}
		return true
	})
}

// checkAny: a typed config Envoy can instantiate, or an optional one, or
// the API key filter's fail-closed marker.
func (c *envoyCheck) checkAny(path string, a *anypb.Any, optional bool) {
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(a.TypeUrl)
	if err != nil {
		c.report("%s: typed config %s: not a known type: %v", path, a.TypeUrl, err)
		return
	}
	msg := mt.New().Interface()
	if err := proto.Unmarshal(a.Value, msg); err != nil {
		c.report("%s: typed config %s: %v", path, a.TypeUrl, err)
		return
	}
	if v, ok := msg.(interface{ ValidateAll() error }); ok {
		if err := v.ValidateAll(); err != nil {
			c.report("%s: %s: ValidateAll: %v", path, a.TypeUrl, err)
		}
	}
	full := string(msg.ProtoReflect().Descriptor().FullName())
	if ts, ok := msg.(*xdstypev3.TypedStruct); ok {
		// A type Envoy has no proto of: meshgate's own filters.
		switch {
		case ts.TypeUrl == EnvoyAPIKeyTypeURL, ts.TypeUrl == OpenAPITypeURL, ts.TypeUrl == ResponseLimitTypeURL:
			// Fails closed on purpose: an Envoy refuses the listener.
		case !optional:
			c.report("%s: typed config %s is not an Envoy type and not is_optional", path, ts.TypeUrl)
		}
		return
	}
	if !strings.HasPrefix(full, "envoy.") && !optional {
		c.report("%s: typed config %s is not an Envoy type and not is_optional", path, full)
	}
	c.walk(path+"<"+full+">", msg.ProtoReflect(), optional)
}

func (c *envoyCheck) checkSds(path string, s *tlsv3.SdsSecretConfig) {
	src := s.GetSdsConfig()
	switch {
	case src == nil:
		c.report("%s: secret %q without sds_config: Envoy looks for a static secret of its bootstrap, which has none", path, s.Name)
	case src.GetAds() != nil:
		if !c.secrets[s.Name] {
			c.report("%s: secret %q over ADS, which the node does not receive", path, s.Name)
		}
	case src.GetApiConfigSource() != nil:
		for _, g := range src.GetApiConfigSource().GetGrpcServices() {
			if !c.staticClusters[g.GetEnvoyGrpc().GetClusterName()] {
				c.report("%s: secret %q from cluster %q, not a static cluster of the bootstrap", path, s.Name, g.GetEnvoyGrpc().GetClusterName())
			}
		}
	default:
		c.report("%s: secret %q: sds_config neither ADS nor a gRPC API source", path, s.Name)
	}
}

func (c *envoyCheck) needCluster(path, name string) {
	if !c.clusters[name] {
		c.report("%s: cluster %q exists neither in CDS nor in the bootstrap", path, name)
	}
}

func (c *envoyCheck) checkCluster(cl *clusterv3.Cluster) {
	switch cl.GetType() {
	case clusterv3.Cluster_EDS:
		if cl.GetEdsClusterConfig().GetEdsConfig().GetAds() == nil {
			c.report("cluster %q: EDS without eds_cluster_config.eds_config ADS", cl.Name)
		}
	case clusterv3.Cluster_STATIC, clusterv3.Cluster_STRICT_DNS, clusterv3.Cluster_LOGICAL_DNS:
		if len(cl.GetLoadAssignment().GetEndpoints()) == 0 {
			c.report("cluster %q: %v without a load_assignment", cl.Name, cl.GetType())
		}
	}
}

// checkListener: RDS names exist, and authenticated principals only where
// the chain has TLS.
func (c *envoyCheck) checkListener(l *listenerv3.Listener) {
	for i, chain := range l.FilterChains {
		tls := chain.GetTransportSocket() != nil
		for _, f := range chain.Filters {
			msg, err := f.GetTypedConfig().UnmarshalNew()
			if err != nil {
				continue // reported by walk
			}
			var configs []proto.Message
			if hcm, ok := msg.(*hcmv3.HttpConnectionManager); ok {
				configs = append(configs, hcm)
				if rds := hcm.GetRds(); rds != nil {
					if rds.GetConfigSource().GetAds() == nil {
						c.report("listener %q: RDS %q not over ADS", l.Name, rds.RouteConfigName)
					}
					rc, ok := c.routes[rds.RouteConfigName]
					if !ok {
						c.report("listener %q: RDS %q: no such route configuration", l.Name, rds.RouteConfigName)
					} else {
						configs = append(configs, rc)
					}
				}
			} else {
				configs = append(configs, msg)
			}
			if tls {
				continue
			}
			for _, cfg := range configs {
				if authenticatedPrincipal(cfg.ProtoReflect()) {
					c.report("listener %q filter chain %d: an authenticated principal on a plaintext chain (Envoy: no peer certificate)", l.Name, i)
				}
			}
		}
	}
}

// authenticatedPrincipal reports whether m holds an RBAC authenticated
// principal, Anys unpacked.
func authenticatedPrincipal(m protoreflect.Message) bool {
	switch msg := m.Interface().(type) {
	case *rbacv3.Principal:
		if msg.GetAuthenticated() != nil {
			return true
		}
	case *anypb.Any:
		inner, err := msg.UnmarshalNew()
		return err == nil && authenticatedPrincipal(inner.ProtoReflect())
	}
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			for i := range v.List().Len() {
				found = found || authenticatedPrincipal(v.List().Get(i).Message())
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				found = found || authenticatedPrincipal(mv.Message())
				return !found
			})
		case !fd.IsList() && !fd.IsMap() && fd.Message() != nil:
			found = found || authenticatedPrincipal(v.Message())
		}
		return !found
	})
	return found
}

// TestEnvoyFailsClosedOnProtectiveExtensions: for an Envoy, request
// validation and the response limit become non-optional (the Envoy refuses
// the listener rather than letting requests through unchecked), while the
// response cache stays optional (an Envoy without it only misses the cache).
func TestEnvoyFailsClosedOnProtectiveExtensions(t *testing.T) {
	t.Parallel()
	validation, err := openAPIFilter()
	if err != nil {
		t.Fatal(err)
	}
	limit, err := responseLimitFilter()
	if err != nil {
		t.Fatal(err)
	}
	cache, err := responseCacheFilter(1 << 20)
	if err != nil {
		t.Fatal(err)
	}
	hcm, err := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "x", HttpFilters: []*hcmv3.HttpFilter{validation, limit, cache},
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{}}})
	if err != nil {
		t.Fatal(err)
	}
	f := &listenerv3.Filter{Name: "hcm", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}
	changed, err := hcmForEnvoy(f)
	if err != nil || !changed {
		t.Fatalf("hcmForEnvoy: changed %v, %v", changed, err)
	}
	out := &hcmv3.HttpConnectionManager{}
	if err := f.GetTypedConfig().UnmarshalTo(out); err != nil {
		t.Fatal(err)
	}
	want := map[string]bool{OpenAPIFilterName: false, ResponseLimitFilterName: false, ResponseCacheFilterName: true}
	for _, hf := range out.HttpFilters {
		if hf.IsOptional != want[hf.Name] {
			t.Errorf("%s: is_optional %v on an Envoy, want %v", hf.Name, hf.IsOptional, want[hf.Name])
		}
	}
}
