package xdscheck

import (
	"strconv"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// field says how one populated field of a message is checked. The zero value
// means: allowed, and its value is checked with the rule of its own message type.
type field struct {
	// enums, when not nil, lists the enum numbers allowed in this field.
	enums []protoreflect.EnumNumber
	// minItems and maxItems bound the length of a repeated field (0 = no bound).
	minItems, maxItems int
	// keys, when not nil, lists the map keys allowed in this map field.
	keys []string
	// anyTypes, for a google.protobuf.Any field (or a map of them), lists the
	// full message names it may carry.
	anyTypes []protoreflect.FullName
	// only, when not nil, replaces the rule of the field's message type in this
	// position (a message type allowed more narrowly in one place than another).
	only *message
	// values, when not nil, lists the values allowed in this string field.
	values []string
}

// message is the rule of one message type: the fields that may be populated,
// and the fields that must be.
type message struct {
	fields   map[protoreflect.Name]field
	required []protoreflect.Name
	// check, when not nil, adds the rules a field-by-field walk cannot
	// express (an order, a relation between fields). Paths are relative to
	// the message.
	check func(m protoreflect.Message) []Violation
}

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
	routerType          protoreflect.FullName = "envoy.extensions.filters.http.router.v3.Router"
	rbacDenyFilter                            = "meshgate.rbac.deny"
	rbacAllowFilter                           = "meshgate.rbac.allow"
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

// allow builds a message rule whose fields are all checked by their type's rule.
func allow(names ...protoreflect.Name) *message {
	m := &message{fields: make(map[protoreflect.Name]field, len(names))}
	for _, n := range names {
		m.fields[n] = field{}
	}
	return m
}

// with adds or replaces the rule of one field.
func (m *message) with(name protoreflect.Name, f field) *message {
	m.fields[name] = f
	return m
}

// checkedBy adds a whole-message rule.
func (m *message) checkedBy(check func(m protoreflect.Message) []Violation) *message {
	m.check = check
	return m
}

// requires lists fields that must be populated.
func (m *message) requires(names ...protoreflect.Name) *message {
	m.required = append(m.required, names...)
	return m
}

// subset is the supported subset of docs/xds.md, one rule per message type:
// the core resources here, TLS (subset_tls.go) and RBAC (subset_rbac.go) in
// their own files. It is built once and never mutated.
var subset = mergeSubsets(coreSubset, tlsSubset, rbacSubset)

// mergeSubsets joins rule sets; a message type must appear in only one.
func mergeSubsets(sets ...map[protoreflect.FullName]*message) map[protoreflect.FullName]*message {
	out := make(map[protoreflect.FullName]*message)
	for _, set := range sets {
		for name, rule := range set {
			if _, dup := out[name]; dup {
				panic("xdscheck: message type " + string(name) + " has two rules") // programming error, caught by every test
			}
			out[name] = rule
		}
	}
	return out
}

// coreSubset is "The subset the proxy implements" of docs/xds.md.
var coreSubset = map[protoreflect.FullName]*message{
	// Listener.
	// Two filter chains, listener_filters and transport sockets are the TLS
	// part (subset_tls.go): PERMISSIVE and STRICT inbound listeners.
	"envoy.config.listener.v3.Listener": allow("name", "address", "traffic_direction").
		with("filter_chains", field{minItems: 1, maxItems: 2}).
		with("listener_filters", field{maxItems: 1}).
		requires("address", "filter_chains"),
	"envoy.config.listener.v3.FilterChain": allow("filter_chain_match").
		with("filters", field{minItems: 1, maxItems: 1}).
		with("transport_socket", field{only: downstreamTransportSocket}).
		requires("filters"),
	"envoy.config.listener.v3.Filter": allow("name").
		with("typed_config", field{anyTypes: []protoreflect.FullName{hcmType}}).
		requires("typed_config"),
	"envoy.config.core.v3.Address": allow("socket_address").requires("socket_address"),
	"envoy.config.core.v3.SocketAddress": allow("address", "port_value").
		with("protocol", field{enums: []protoreflect.EnumNumber{enumTCP}}),

	// HttpConnectionManager.
	hcmType: allow("stat_prefix", "rds", "route_config", "strip_any_host_port",
		"use_remote_address", "request_headers_timeout", "normalize_path", "merge_slashes",
		"common_http_protocol_options", "max_request_headers_kb").
		with("codec_type", field{enums: []protoreflect.EnumNumber{enumCodecAuto, enumCodecHTTP1, enumCodecHTTP2}}).
		with("http_filters", field{minItems: 1, maxItems: 3}).
		requires("http_filters").
		checkedBy(checkHTTPFilters),
	"envoy.extensions.filters.network.http_connection_manager.v3.Rds": allow("config_source", "route_config_name").
		requires("config_source"),
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": allow("name").
		with("typed_config", field{anyTypes: []protoreflect.FullName{routerType, rbacFilterType}}).
		requires("typed_config"),
	routerType: allow(),
	"envoy.config.core.v3.HttpProtocolOptions": allow("idle_timeout"),
	"envoy.config.core.v3.ConfigSource": allow("ads").
		with("resource_api_version", field{enums: []protoreflect.EnumNumber{enumAPIVersionV3}}).
		requires("ads"),
	"envoy.config.core.v3.AggregatedConfigSource": allow(),

	// RouteConfiguration.
	"envoy.config.route.v3.RouteConfiguration": allow("name", "virtual_hosts"),
	"envoy.config.route.v3.VirtualHost":        allow("name", "domains", "routes"),
	"envoy.config.route.v3.Route": allow("match", "route", "redirect", "direct_response",
		"request_headers_to_add", "request_headers_to_remove",
		"response_headers_to_add", "response_headers_to_remove").
		with("typed_per_filter_config", field{
			keys:     []string{rbacDenyFilter, rbacAllowFilter},
			anyTypes: []protoreflect.FullName{rbacPerRouteType},
		}),
	"envoy.config.route.v3.RouteMatch": allow("prefix", "path", "path_separated_prefix", "safe_regex",
		"case_sensitive", "headers", "query_parameters"),
	"envoy.config.route.v3.HeaderMatcher": allow("name", "string_match", "present_match", "invert_match"),
	"envoy.config.route.v3.QueryParameterMatcher": allow("name", "present_match").
		with("string_match", field{only: allow("exact", "safe_regex")}),
	"envoy.type.matcher.v3.StringMatcher": allow("exact", "safe_regex", "prefix", "suffix", "contains", "ignore_case"),
	"envoy.type.matcher.v3.RegexMatcher":  allow("regex"),
	"envoy.config.route.v3.RouteAction": allow("cluster", "weighted_clusters", "timeout",
		"prefix_rewrite", "regex_rewrite", "host_rewrite_literal"),
	"envoy.config.route.v3.WeightedCluster":               allow("clusters"),
	"envoy.config.route.v3.WeightedCluster.ClusterWeight": allow("name", "weight"),
	"envoy.type.matcher.v3.RegexMatchAndSubstitute":       allow("pattern", "substitution"),
	"envoy.config.route.v3.RedirectAction": allow("scheme_redirect", "host_redirect", "port_redirect",
		"path_redirect", "prefix_rewrite", "response_code", "strip_query"),
	"envoy.config.route.v3.DirectResponseAction": allow("status", "body"),
	"envoy.config.core.v3.DataSource":            allow("inline_string"),
	"envoy.config.core.v3.HeaderValueOption":     allow("header", "append_action"),
	"envoy.config.core.v3.HeaderValue":           allow("key", "value"),

	// Cluster.
	"envoy.config.cluster.v3.Cluster": allow("name", "eds_cluster_config", "load_assignment", "connect_timeout",
		"transport_socket_matches").
		with("type", field{enums: []protoreflect.EnumNumber{enumClusterStatic, enumClusterEDS}}).
		with("lb_policy", field{enums: []protoreflect.EnumNumber{enumRoundRobin}}).
		with("typed_extension_protocol_options", field{
			keys:     []string{upstreamOptionsKey},
			anyTypes: []protoreflect.FullName{upstreamOptionsType},
		}),
	"envoy.config.cluster.v3.Cluster.EdsClusterConfig": allow("eds_config").requires("eds_config"),
	upstreamOptionsType: allow("explicit_http_config").requires("explicit_http_config"),
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions.ExplicitHttpConfig": allow(
		"http_protocol_options", "http2_protocol_options"),
	"envoy.config.core.v3.Http1ProtocolOptions": allow(),
	"envoy.config.core.v3.Http2ProtocolOptions": allow(),

	// ClusterLoadAssignment.
	"envoy.config.endpoint.v3.ClusterLoadAssignment": allow("cluster_name", "endpoints"),
	"envoy.config.endpoint.v3.LocalityLbEndpoints":   allow("lb_endpoints"),
	"envoy.config.endpoint.v3.LbEndpoint":            allow("endpoint", "health_status", "load_balancing_weight", "metadata"),
	"envoy.config.endpoint.v3.Endpoint":              allow("address").requires("address"),
	"envoy.config.core.v3.Metadata": allow().
		with("filter_metadata", field{keys: []string{"meshgate", transportSocketMatchKey}}),
}

// checkHTTPFilters requires the router filter to be the last HTTP filter, and
// the only one: the filters before it are the RBAC filters (docs/xds.md).
func checkHTTPFilters(m protoreflect.Message) []Violation {
	fd := m.Descriptor().Fields().ByName("http_filters")
	if fd == nil || !m.Has(fd) {
		return nil
	}
	list := m.Get(fd).List()
	var out []Violation
	for i := range list.Len() {
		isRouter := typedConfigName(list.Get(i).Message()) == routerType
		last := i == list.Len()-1
		switch {
		case last && !isRouter:
			out = append(out, Violation{
				Path:   "http_filters[" + strconv.Itoa(i) + "]",
				Reason: "the last HTTP filter must be the router (" + string(routerType) + ")",
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
