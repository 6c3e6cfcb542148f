package xdscheck

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/api/servicemeta"
)

// Field says how one populated field of a message is checked. The zero value
// means: allowed, and its value is checked with the rule of its own message type.
type Field struct {
	// Enums, when not nil, lists the enum numbers allowed in this field.
	Enums []protoreflect.EnumNumber
	// MinItems and MaxItems bound the length of a repeated field (0 = no bound).
	MinItems, MaxItems int
	// Keys, when not nil, lists the map keys allowed in this map field.
	Keys []string
	// AnyTypes, for a google.protobuf.Any field (or a map of them), lists the
	// full message names it may carry.
	AnyTypes []protoreflect.FullName
	// Only, when not nil, replaces the rule of the field's message type in this
	// position (a message type allowed more narrowly in one place than another).
	Only *Message
	// Values, when not nil, lists the values allowed in this string field.
	Values []string
}

// Message is the rule of one message type: the fields that may be populated,
// and the fields that must be. Build it with Allow and its chained methods
// while assembling Rules; it is not modified once a Checker uses it.
type Message struct {
	fields   map[protoreflect.Name]Field
	required []protoreflect.Name
	// check, when not nil, adds the rules a field-by-field walk cannot
	// express (an order, a relation between fields). Paths are relative to
	// the message.
	check func(m protoreflect.Message) []Violation
}

// Rules is a set of message rules, by full message name: the core subset,
// or what one HTTP filter adds to it (HTTPFilter.Rules).
type Rules map[protoreflect.FullName]*Message

// opaque marks message types accepted whole, without looking inside: plain
// values (durations, wrappers) and free-form data (Struct labels).
var opaque = map[protoreflect.FullName]bool{
	"google.protobuf.Duration":    true,
	"google.protobuf.UInt32Value": true,
	"google.protobuf.BoolValue":   true,
	"google.protobuf.Struct":      true,
}

// Names of the typed configs the proxy implements.
const (
	hcmType             protoreflect.FullName = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	httpFilterType      protoreflect.FullName = "envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter"
	routeConfigType     protoreflect.FullName = "envoy.config.route.v3.RouteConfiguration"
	virtualHostType     protoreflect.FullName = "envoy.config.route.v3.VirtualHost"
	routeType           protoreflect.FullName = "envoy.config.route.v3.Route"
	upstreamOptionsType protoreflect.FullName = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	upstreamOptionsKey                        = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	enumTCP                                   = 0 // envoy.config.core.v3.SocketAddress.Protocol.TCP
	enumClusterStatic                         = 0 // envoy.config.cluster.v3.Cluster.DiscoveryType.STATIC
	enumClusterEDS                            = 3 // envoy.config.cluster.v3.Cluster.DiscoveryType.EDS
	enumRoundRobin                            = 0 // envoy.config.cluster.v3.Cluster.LbPolicy.ROUND_ROBIN
	enumAPIVersionV3                          = 2 // envoy.config.core.v3.ApiVersion.V3
	enumCodecAuto                             = 0 // HttpConnectionManager.CodecType.AUTO
	enumCodecHTTP1                            = 1 // HttpConnectionManager.CodecType.HTTP1
	enumCodecHTTP2                            = 2 // HttpConnectionManager.CodecType.HTTP2
)

// The values of RouteAction.ClusterNotFoundResponseCode, all implemented.
const (
	enumClusterNotFound503 = 0 // SERVICE_UNAVAILABLE
	enumClusterNotFound404 = 1 // NOT_FOUND
	enumClusterNotFound500 = 2 // INTERNAL_SERVER_ERROR
)

// RouterType is the config message of the router, the terminal HTTP filter
// every HttpConnectionManager ends with; the core subset knows it.
const RouterType protoreflect.FullName = "envoy.extensions.filters.http.router.v3.Router"

// Allow builds a message rule whose fields are all checked by their type's rule.
func Allow(names ...protoreflect.Name) *Message {
	m := &Message{fields: make(map[protoreflect.Name]Field, len(names))}
	for _, n := range names {
		m.fields[n] = Field{}
	}
	return m
}

// With adds or replaces the rule of one field.
func (m *Message) With(name protoreflect.Name, f Field) *Message {
	m.fields[name] = f
	return m
}

// CheckedBy adds a whole-message rule.
func (m *Message) CheckedBy(check func(m protoreflect.Message) []Violation) *Message {
	m.check = check
	return m
}

// Requires lists fields that must be populated.
func (m *Message) Requires(names ...protoreflect.Name) *Message {
	m.required = append(m.required, names...)
	return m
}

// HTTPFilter is what one HTTP filter adds to the subset: the message of its
// listener-level config (allowed in http_filters[].typed_config), that of
// its per-route config (allowed in typed_per_filter_config of routes,
// virtual hosts and route configurations, under any key: the name of the
// filter it configures), and the rules of the messages inside them.
type HTTPFilter struct {
	ConfigType   protoreflect.FullName
	PerRouteType protoreflect.FullName // "" when the filter has no per-route config
	Rules        Rules
	// TypeURL, for a meshgate filter that has no Envoy config message
	// (ConfigType and PerRouteType then empty), is the type_url of the
	// xds.type.v3.TypedStruct carrying its config: in http_filters, and per
	// route inside an envoy.config.route.v3.FilterConfig (TypedStructType,
	// FilterConfigType). CheckValue checks the TypedStruct's value (a
	// Struct, which field rules cannot see into), nil standing for {}.
	TypeURL    string
	CheckValue func(value *structpb.Struct) []Violation
}

// The carriers of the configs of meshgate filters without an Envoy config
// message (HTTPFilter.TypeURL): an Envoy that does not know such a filter
// skips it when its entry is optional (is_optional), instead of rejecting
// the listener.
const (
	TypedStructType  protoreflect.FullName = "xds.type.v3.TypedStruct"
	FilterConfigType protoreflect.FullName = "envoy.config.route.v3.FilterConfig"
)

// Checker checks resources against the core subset plus the rules of a set
// of HTTP filters. It is immutable and safe for concurrent use.
type Checker struct {
	subset Rules
}

// core is the checker of the core subset alone: the router is the only HTTP
// filter, and no typed_per_filter_config is accepted. Never modified.
var core = mustNew()

func mustNew() *Checker {
	c, err := New()
	if err != nil {
		panic(err) // the core rule sets are constants: caught by every test
	}
	return c
}

// Check checks msg against the core subset alone (see Checker.Check): a
// listener may carry the router as its only HTTP filter, and routes no
// typed_per_filter_config. Resources with other HTTP filters are checked
// with the Checker of the proxy's filter registry.
func Check(msg proto.Message) error { return core.Check(msg) }

// New returns a checker of the core subset plus filters. A message type may
// have one rule only: two filters (or a filter and the core) defining
// different rules for one type, or two filters sharing a config type, is
// an error.
func New(filters ...HTTPFilter) (*Checker, error) {
	subset := make(Rules)
	for _, set := range []Rules{coreSubset(), tlsSubset(), tracingSubset(), accessLogSubset(), trafficSubset(), resilienceSubset(), upgradeSubset(), l4Subset(), captureSubset()} {
		for name, rule := range set {
			if _, dup := subset[name]; dup {
				return nil, fmt.Errorf("xdscheck: message type %s has two rules", name)
			}
			subset[name] = rule
		}
	}
	extendTraffic(subset)
	extendUpgrade(subset)
	extendHTTP2(subset)
	extendL4(subset)
	extendCapture(subset)
	configTypes := []protoreflect.FullName{RouterType}
	var perRouteTypes []protoreflect.FullName
	typedStructs := map[string]func(*structpb.Struct) []Violation{}
	for _, f := range filters {
		if f.TypeURL != "" {
			if _, dup := typedStructs[f.TypeURL]; dup || f.ConfigType != "" || f.PerRouteType != "" || f.CheckValue == nil {
				return nil, fmt.Errorf("xdscheck: HTTP filter type_url %q: registered twice, or with a config type or without CheckValue", f.TypeURL)
			}
			typedStructs[f.TypeURL] = f.CheckValue
			continue
		}
		if f.ConfigType == "" || slices.Contains(configTypes, f.ConfigType) {
			return nil, fmt.Errorf("xdscheck: HTTP filter config type %q: empty or registered twice", f.ConfigType)
		}
		configTypes = append(configTypes, f.ConfigType)
		if f.PerRouteType != "" {
			if slices.Contains(perRouteTypes, f.PerRouteType) {
				return nil, fmt.Errorf("xdscheck: HTTP filter per-route config type %q registered twice", f.PerRouteType)
			}
			perRouteTypes = append(perRouteTypes, f.PerRouteType)
		}
		for name, rule := range f.Rules {
			if have, dup := subset[name]; dup && have != rule {
				return nil, fmt.Errorf("xdscheck: message type %s has two rules (HTTP filter %s)", name, f.ConfigType)
			}
			subset[name] = rule
		}
		for _, t := range []protoreflect.FullName{f.ConfigType, f.PerRouteType} {
			if _, ok := subset[t]; t != "" && !ok {
				return nil, fmt.Errorf("xdscheck: HTTP filter %s: no rule for %s", f.ConfigType, t)
			}
		}
	}
	if len(typedStructs) > 0 {
		configTypes = append(configTypes, TypedStructType)
		perRouteTypes = append(perRouteTypes, FilterConfigType)
		subset[TypedStructType] = Allow("type_url", "value").Requires("type_url").
			CheckedBy(func(m protoreflect.Message) []Violation { return checkTypedStruct(m, typedStructs) })
		subset[FilterConfigType] = Allow("is_optional").
			With("config", Field{AnyTypes: []protoreflect.FullName{TypedStructType}}).
			Requires("config")
	}
	// The fields whose allowed typed configs depend on the filters.
	subset[httpFilterType] = Allow("name", "is_optional").
		With("typed_config", Field{AnyTypes: configTypes}).
		Requires("typed_config")
	perRoute := Field{AnyTypes: perRouteTypes}
	rc, vh, rt := routeConfigRule(), virtualHostRule(), routeRule()
	extendTrafficVirtualHost(vh)
	if len(perRouteTypes) > 0 {
		rc.With("typed_per_filter_config", perRoute)
		vh.With("typed_per_filter_config", perRoute)
		rt.With("typed_per_filter_config", perRoute)
	}
	subset[routeConfigType], subset[virtualHostType], subset[routeType] = rc, vh, rt
	return &Checker{subset: subset}, nil
}

// checkTypedStruct checks a TypedStruct's type_url is one of a filter,
// and its value with that filter's CheckValue.
func checkTypedStruct(m protoreflect.Message, checks map[string]func(*structpb.Struct) []Violation) []Violation {
	ts, ok := m.Interface().(*xdstypev3.TypedStruct)
	if !ok {
		return []Violation{{Reason: "malformed TypedStruct"}}
	}
	check := checks[ts.GetTypeUrl()]
	if check == nil {
		return []Violation{{Path: "type_url", Reason: fmt.Sprintf("value %q not supported", ts.GetTypeUrl())}}
	}
	var out []Violation
	for _, v := range check(ts.GetValue()) {
		out = append(out, Violation{Path: join("value", v.Path), Reason: v.Reason})
	}
	return out
}

// coreSubset is "The subset the proxy implements" of docs/xds.md, built
// anew for each Checker. HttpFilter, Route, VirtualHost and
// RouteConfiguration are set by New: what they may carry depends on the
// HTTP filters.
func coreSubset() Rules {
	return Rules{
		// Listener.
		// Two filter chains, listener_filters and transport sockets are the TLS
		// part (subset_tls.go): PERMISSIVE and STRICT inbound listeners.
		"envoy.config.listener.v3.Listener": Allow("name", "address", "additional_addresses", "traffic_direction").
			// Two for PERMISSIVE inbound listeners; one per HTTPS listener
			// (by SNI) on a gateway port.
			With("filter_chains", Field{MinItems: 1, MaxItems: maxFilterChains}).
			With("listener_filters", Field{MaxItems: 1}).
			Requires("address", "filter_chains"),
		"envoy.config.listener.v3.FilterChain": Allow("filter_chain_match", "name").
			With("filters", Field{MinItems: 1, MaxItems: 1}).
			With("transport_socket", Field{Only: downstreamTransportSocket}).
			Requires("filters"),
		"envoy.config.listener.v3.Filter": Allow("name").
			With("typed_config", Field{AnyTypes: []protoreflect.FullName{hcmType}}).
			Requires("typed_config"),
		"envoy.config.listener.v3.AdditionalAddress": Allow("address").Requires("address"),
		"envoy.config.core.v3.Address":               Allow("socket_address").Requires("socket_address"),
		"envoy.config.core.v3.SocketAddress": Allow("address", "port_value").
			With("protocol", Field{Enums: []protoreflect.EnumNumber{enumTCP}}),

		// HttpConnectionManager.
		hcmType: Allow("stat_prefix", "rds", "route_config", "strip_any_host_port",
			"use_remote_address", "request_headers_timeout", "normalize_path", "merge_slashes",
			"common_http_protocol_options", "max_request_headers_kb", "tracing", "access_log").
			With("codec_type", Field{Enums: []protoreflect.EnumNumber{enumCodecAuto, enumCodecHTTP1, enumCodecHTTP2}}).
			With("http_filters", Field{MinItems: 1}).
			Requires("http_filters").
			CheckedBy(checkHTTPFilters),
		"envoy.extensions.filters.network.http_connection_manager.v3.Rds": Allow("config_source", "route_config_name").
			Requires("config_source"),
		RouterType: Allow(),
		"envoy.config.core.v3.HttpProtocolOptions": Allow("idle_timeout"),
		"envoy.config.core.v3.ConfigSource": Allow("ads").
			With("resource_api_version", Field{Enums: []protoreflect.EnumNumber{enumAPIVersionV3}}).
			Requires("ads"),
		"envoy.config.core.v3.AggregatedConfigSource": Allow(),

		// RouteConfiguration.
		// RouteConfiguration, VirtualHost and Route: routeConfigRule,
		// virtualHostRule, routeRule.
		"envoy.config.route.v3.RouteMatch": Allow("prefix", "path", "path_separated_prefix", "safe_regex",
			"case_sensitive", "headers", "query_parameters", "grpc"),
		"envoy.config.route.v3.RouteMatch.GrpcRouteMatchOptions": Allow(),
		"envoy.config.route.v3.HeaderMatcher":                    Allow("name", "string_match", "present_match", "invert_match"),
		"envoy.config.route.v3.QueryParameterMatcher": Allow("name", "present_match").
			With("string_match", Field{Only: Allow("exact", "safe_regex")}),
		"envoy.type.matcher.v3.StringMatcher":                 Allow("exact", "safe_regex", "prefix", "suffix", "contains", "ignore_case"),
		"envoy.type.matcher.v3.RegexMatcher":                  Allow("regex"),
		"envoy.config.route.v3.RouteAction.MaxStreamDuration": Allow("grpc_timeout_header_max"),
		"envoy.config.route.v3.RouteAction": Allow("cluster", "weighted_clusters", "timeout", "max_stream_duration",
			"prefix_rewrite", "regex_rewrite", "host_rewrite_literal", "retry_policy").
			With("cluster_not_found_response_code", Field{Enums: []protoreflect.EnumNumber{
				enumClusterNotFound503, enumClusterNotFound404, enumClusterNotFound500}}).
			With("request_mirror_policies", Field{MaxItems: MaxMirrorPolicies}),
		"envoy.config.route.v3.WeightedCluster": Allow("clusters"),
		"envoy.config.route.v3.WeightedCluster.ClusterWeight": Allow("name", "weight",
			"request_headers_to_add", "request_headers_to_remove",
			"response_headers_to_add", "response_headers_to_remove"),
		// Retries (docs/xds.md#retries): retry_on is a list of the
		// conditions the proxy implements.
		"envoy.config.route.v3.RetryPolicy": Allow("retry_on", "num_retries", "per_try_timeout",
			"retriable_status_codes", "retry_back_off", "host_selection_retry_max_attempts").
			With("retry_host_predicate", Field{MaxItems: 1}).
			CheckedBy(checkRetryOn),
		"envoy.config.route.v3.RetryPolicy.RetryBackOff": Allow("base_interval", "max_interval").
			Requires("base_interval"),
		"envoy.config.route.v3.RetryPolicy.RetryHostPredicate": Allow().
			With("name", Field{Values: []string{PreviousHostsPredicate}}).
			With("typed_config", Field{AnyTypes: []protoreflect.FullName{previousHostsType}}).
			Requires("typed_config"),
		previousHostsType: Allow(),
		// Mirrors: the cluster, and the share of the requests as a default
		// value (no runtime).
		"envoy.config.route.v3.RouteAction.RequestMirrorPolicy": Allow("cluster", "runtime_fraction").
			Requires("cluster"),
		"envoy.config.core.v3.RuntimeFractionalPercent": Allow("default_value").Requires("default_value"),
		"envoy.type.v3.FractionalPercent":               Allow("numerator", "denominator"),
		"envoy.type.matcher.v3.RegexMatchAndSubstitute": Allow("pattern", "substitution"),
		"envoy.config.route.v3.RedirectAction": Allow("scheme_redirect", "host_redirect", "port_redirect",
			"path_redirect", "prefix_rewrite", "response_code", "strip_query"),
		"envoy.config.route.v3.DirectResponseAction": Allow("status", "body"),
		"envoy.config.core.v3.DataSource":            Allow("inline_string"),
		"envoy.config.core.v3.HeaderValueOption":     Allow("header", "append_action"),
		"envoy.config.core.v3.HeaderValue":           Allow("key", "value"),

		// Cluster.
		"envoy.config.cluster.v3.Cluster": Allow("name", "eds_cluster_config", "load_assignment", "connect_timeout",
			"transport_socket_matches", "circuit_breakers", "outlier_detection").
			With("transport_socket", Field{Only: backendTransportSocket}).
			// The mesh service's addresses (api/servicemeta).
			With("metadata", Field{Only: Allow().
				With("filter_metadata", Field{Keys: []string{servicemeta.Key}})}).
			With("health_checks", Field{MaxItems: 1}).
			With("type", Field{Enums: []protoreflect.EnumNumber{enumClusterStatic, enumClusterEDS}}).
			With("lb_policy", Field{Enums: []protoreflect.EnumNumber{enumRoundRobin}}).
			With("typed_extension_protocol_options", Field{
				Keys:     []string{upstreamOptionsKey},
				AnyTypes: []protoreflect.FullName{upstreamOptionsType},
			}),
		"envoy.config.cluster.v3.Cluster.EdsClusterConfig": Allow("eds_config").Requires("eds_config"),
		upstreamOptionsType: Allow("explicit_http_config").Requires("explicit_http_config"),
		"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": Allow(
			"http_protocol_options", "http2_protocol_options"),
		"envoy.config.core.v3.Http1ProtocolOptions": Allow(),
		"envoy.config.core.v3.Http2ProtocolOptions": Allow(),

		// ClusterLoadAssignment.
		"envoy.config.endpoint.v3.ClusterLoadAssignment": Allow("cluster_name", "endpoints"),
		"envoy.config.endpoint.v3.LocalityLbEndpoints":   Allow("lb_endpoints", "locality", "load_balancing_weight", "priority"),
		"envoy.config.core.v3.Locality":                  Allow("zone"),
		"envoy.config.endpoint.v3.LbEndpoint":            Allow("endpoint", "health_status", "load_balancing_weight", "metadata"),
		"envoy.config.endpoint.v3.Endpoint":              Allow("address").Requires("address"),
		"envoy.config.core.v3.Metadata": Allow().
			With("filter_metadata", Field{Keys: []string{"meshgate", transportSocketMatchKey}}),
	}
}

// PreviousHostsPredicate is the one retry host predicate the proxy
// implements: a retry prefers an endpoint the request has not tried.
const PreviousHostsPredicate = "envoy.retry_host_predicates.previous_hosts"

const previousHostsType protoreflect.FullName = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"

// MaxMirrorPolicies bounds request_mirror_policies: each is a copy of the
// request.
const MaxMirrorPolicies = 8

// RetryOnConditions are the retry_on conditions the proxy implements
// (Envoy's x-envoy-retry-on names).
var RetryOnConditions = []string{"5xx", "gateway-error", "reset", "connect-failure", "retriable-status-codes"}

// checkRetryOn requires retry_on to be a comma-separated list of
// RetryOnConditions.
func checkRetryOn(m protoreflect.Message) []Violation {
	fd := m.Descriptor().Fields().ByName("retry_on")
	if fd == nil || !m.Has(fd) {
		return nil
	}
	for _, c := range strings.Split(m.Get(fd).String(), ",") {
		if !slices.Contains(RetryOnConditions, strings.TrimSpace(c)) {
			return []Violation{{Path: "retry_on", Reason: fmt.Sprintf("condition %q not supported (want %s)", c, strings.Join(RetryOnConditions, ", "))}}
		}
	}
	return nil
}

// routeConfigRule, virtualHostRule and routeRule are the rules of the route
// resources without typed_per_filter_config (New adds it when filters have
// per-route configs).
func routeConfigRule() *Message {
	return Allow("name", "virtual_hosts", "ignore_port_in_host_matching")
}

func virtualHostRule() *Message {
	return Allow("name", "domains", "routes", "response_headers_to_add")
}

func routeRule() *Message {
	return Allow("match", "route", "redirect", "direct_response",
		"request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove", "tracing")
}

// checkHTTPFilters requires the router filter to be the last HTTP filter, and
// the only router: the filters before it run in order before it (docs/xds.md).
func checkHTTPFilters(m protoreflect.Message) []Violation {
	fd := m.Descriptor().Fields().ByName("http_filters")
	if fd == nil || !m.Has(fd) {
		return nil
	}
	list := m.Get(fd).List()
	var out []Violation
	for i := range list.Len() {
		isRouter := typedConfigName(list.Get(i).Message()) == RouterType
		last := i == list.Len()-1
		switch {
		case last && !isRouter:
			out = append(out, Violation{
				Path:   "http_filters[" + strconv.Itoa(i) + "]",
				Reason: "the last HTTP filter must be the router (" + string(RouterType) + ")",
			})
		case !last && isRouter:
			out = append(out, Violation{
				Path:   "http_filters[" + strconv.Itoa(i) + "]",
				Reason: "the router must be the last HTTP filter",
			})
		}
	}
	return out
}

// typedConfigName is the message name inside the typed_config Any of m, or
// "" when m has none.
func typedConfigName(m protoreflect.Message) protoreflect.FullName {
	fd := m.Descriptor().Fields().ByName("typed_config")
	if fd == nil || fd.Message() == nil || !m.Has(fd) {
		return ""
	}
	anyMsg := m.Get(fd).Message()
	urlField := anyMsg.Descriptor().Fields().ByName("type_url")
	if urlField == nil {
		return ""
	}
	url := anyMsg.Get(urlField).String()
	if i := strings.LastIndexByte(url, '/'); i >= 0 {
		url = url[i+1:]
	}
	return protoreflect.FullName(url)
}
