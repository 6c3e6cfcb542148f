// Package filters is the proxy's registry of HTTP filters: it maps the type
// of each filter's standard Envoy config message (the type URL of an
// http_filters entry's typed_config, and of a typed_per_filter_config
// value) to the filter's httpfilter.Factory, one folder per filter below
// this one (dataplane/filters/<name>).
//
// A Registry is a value, built once (Default, or New with the factories of
// one's choice) and passed to the proxy: it checks resources against the
// core subset plus every filter's (Check), compiles an
// HttpConnectionManager's http_filters into the filters that run before the
// router (Chain), and compiles per-route configs for the router
// (CompilePerFilterConfig). It is immutable and safe for concurrent use.
//
// Adding a filter: write dataplane/filters/<name> (its Factory, subset,
// compile, handler, tests and fuzz target) and add its Factory to Default.
package filters

import (
	"fmt"
	"maps"
	"slices"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/filters/apikeyauth"
	"github.com/meshgate/meshgate/dataplane/filters/basicauth"
	"github.com/meshgate/meshgate/dataplane/filters/buffer"
	"github.com/meshgate/meshgate/dataplane/filters/cache"
	"github.com/meshgate/meshgate/dataplane/filters/consumers"
	"github.com/meshgate/meshgate/dataplane/filters/cors"
	"github.com/meshgate/meshgate/dataplane/filters/extauthz"
	"github.com/meshgate/meshgate/dataplane/filters/fault"
	"github.com/meshgate/meshgate/dataplane/filters/globalratelimit"
	"github.com/meshgate/meshgate/dataplane/filters/grpcweb"
	"github.com/meshgate/meshgate/dataplane/filters/headermutation"
	"github.com/meshgate/meshgate/dataplane/filters/jwtauthn"
	"github.com/meshgate/meshgate/dataplane/filters/localratelimit"
	"github.com/meshgate/meshgate/dataplane/filters/openapi"
	"github.com/meshgate/meshgate/dataplane/filters/rbac"
	"github.com/meshgate/meshgate/dataplane/filters/responselimit"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// routerName is the conventional name of the router entry, for messages.
const routerName = "envoy.filters.http.router"

// Registry maps HTTP filter config types to their factories.
type Registry struct {
	byConfig   map[protoreflect.FullName]*httpfilter.Factory
	byPerRoute map[protoreflect.FullName]*httpfilter.Factory
	// byTypeURL: the meshgate filters whose configs are TypedStructs
	// (httpfilter.Factory.TypeURL), by type_url.
	byTypeURL map[string]*httpfilter.Factory
	checker   *xdscheck.Checker
}

// Default returns a registry of the built-in filters: the router
// (envoy.extensions.filters.http.router.v3.Router, always known), RBAC
// (rbac.v3.RBAC), header mutation (header_mutation.v3.HeaderMutation),
// fault injection (fault.v3.HTTPFault), buffer (buffer.v3.Buffer: request
// body limits), gRPC-Web (grpc_web.v3.GrpcWeb), CORS (cors.v3.Cors),
// meshgate's response limit (a TypedStruct of responselimit.TypeURL:
// response body limits), local rate limit
// (local_ratelimit.v3.LocalRateLimit), global rate limit
// (ratelimit.v3.RateLimit), JWT authentication
// (jwt_authn.v3.JwtAuthentication), API keys (api_key_auth.v3.ApiKeyAuth)
// basic auth (basic_auth.v3.BasicAuth), external authorization
// (ext_authz.v3.ExtAuthz), meshgate's request validation (a TypedStruct of
// openapi.TypeURL: OpenAPI 3), meshgate's response cache (a TypedStruct
// of cache.TypeURL) and meshgate's consumers (a TypedStruct of
// consumers.TypeURL: the JWT subjects of declared consumers).
func Default() *Registry {
	r, err := New(rbac.Factory(), headermutation.Factory(), fault.Factory(), buffer.Factory(), grpcweb.Factory(),
		cors.Factory(), responselimit.Factory(), localratelimit.Factory(), globalratelimit.Factory(),
		jwtauthn.Factory(), apikeyauth.Factory(), basicauth.Factory(), extauthz.Factory(), openapi.Factory(),
		cache.Factory(), consumers.Factory())
	if err != nil {
		panic(err) // the built-ins are constants: caught by every test
	}
	return r
}

// New returns a registry of the router and factories. Two factories of one
// config or per-route type, a factory without New, or rules that conflict
// (xdscheck.New) are an error.
func New(factories ...httpfilter.Factory) (*Registry, error) {
	r := &Registry{
		byConfig:   make(map[protoreflect.FullName]*httpfilter.Factory, len(factories)),
		byPerRoute: make(map[protoreflect.FullName]*httpfilter.Factory, len(factories)),
		byTypeURL:  map[string]*httpfilter.Factory{},
	}
	subsets := make([]xdscheck.HTTPFilter, 0, len(factories))
	for i := range factories {
		f := &factories[i]
		if f.TypeURL != "" {
			if f.New == nil || f.NewPerRoute == nil || f.ConfigType != "" || f.PerRouteType != "" {
				return nil, fmt.Errorf("filters: %s: New and NewPerRoute are required, ConfigType and PerRouteType empty", f.TypeURL)
			}
			if _, dup := r.byTypeURL[f.TypeURL]; dup {
				return nil, fmt.Errorf("filters: type_url %s registered twice", f.TypeURL)
			}
			r.byTypeURL[f.TypeURL] = f
			subsets = append(subsets, f.Subset())
			continue
		}
		if f.New == nil || (f.PerRouteType != "") != (f.NewPerRoute != nil) {
			return nil, fmt.Errorf("filters: %s: New, and NewPerRoute with PerRouteType, are required", f.ConfigType)
		}
		if _, dup := r.byConfig[f.ConfigType]; dup || f.ConfigType == xdscheck.RouterType {
			return nil, fmt.Errorf("filters: config type %s registered twice", f.ConfigType)
		}
		r.byConfig[f.ConfigType] = f
		if f.PerRouteType != "" {
			if _, dup := r.byPerRoute[f.PerRouteType]; dup {
				return nil, fmt.Errorf("filters: per-route config type %s registered twice", f.PerRouteType)
			}
			r.byPerRoute[f.PerRouteType] = f
		}
		subsets = append(subsets, f.Subset())
	}
	checker, err := xdscheck.New(subsets...)
	if err != nil {
		return nil, err
	}
	r.checker = checker
	return r, nil
}

// ConfigTypes lists the config types of the registered filters, the router
// first, then sorted (the filters configured by TypedStructs: TypeURLs).
func (r *Registry) ConfigTypes() []protoreflect.FullName {
	return append([]protoreflect.FullName{xdscheck.RouterType}, slices.Sorted(maps.Keys(r.byConfig))...)
}

// TypeURLs lists the type URLs of the registered filters configured by
// xds.type.v3.TypedStruct, sorted.
func (r *Registry) TypeURLs() []string { return slices.Sorted(maps.Keys(r.byTypeURL)) }

// factoryOf returns the factory of a typed_config and the config it
// compiles: the message, or a TypedStruct's value; nil for an unknown type.
func (r *Registry) factoryOf(typed *anypb.Any) (*httpfilter.Factory, proto.Message, error) {
	if typed.MessageName() != xdscheck.TypedStructType {
		factory := r.byConfig[typed.MessageName()]
		if factory == nil {
			return nil, nil, nil
		}
		config, err := typed.UnmarshalNew()
		return factory, config, err
	}
	ts := new(xdstypev3.TypedStruct)
	if err := typed.UnmarshalTo(ts); err != nil {
		return nil, nil, err
	}
	factory := r.byTypeURL[ts.GetTypeUrl()]
	if factory == nil {
		return nil, nil, fmt.Errorf("type_url %q not supported", ts.GetTypeUrl())
	}
	value := ts.GetValue()
	if value == nil {
		value = new(structpb.Struct)
	}
	return factory, value, nil
}

// Check checks an xDS resource against the core subset plus every
// registered filter's (xdscheck.Checker.Check).
func (r *Registry) Check(msg proto.Message) error { return r.checker.Check(msg) }

// NewStats returns the filters' counters of one proxy, with every family a
// filter declares (Factory.Stats) present, empty.
func (r *Registry) NewStats() *httpfilter.Stats {
	s := new(httpfilter.Stats)
	for _, f := range r.byConfig {
		for _, name := range f.Stats {
			s.Counters(name)
		}
	}
	for _, f := range r.byTypeURL {
		for _, name := range f.Stats {
			s.Counters(name)
		}
	}
	return s
}

// Chain compiles an HttpConnectionManager's http_filters, already checked
// by r.Check, into the filters that run before the router, in order (nil
// when the router is the only entry). Errors name the entry: an empty list,
// a disabled entry, a type no factory knows, a router that is missing or
// not last, a name used twice (per-route configs are keyed by name), or a
// config its factory refuses.
func (r *Registry) Chain(entries []*hcmv3.HttpFilter, env httpfilter.Env) ([]httpfilter.Filter, error) {
	if len(entries) == 0 {
		return nil, fmt.Errorf("http_filters: the router (%s) is required", routerName)
	}
	var chain []httpfilter.Filter
	seen := make(map[string]bool, len(entries))
	for i, entry := range entries {
		where := fmt.Sprintf("http_filters[%d] %q", i, entry.GetName())
		if entry.GetDisabled() {
			return nil, fmt.Errorf("%s: disabled: not supported", where)
		}
		typed := entry.GetTypedConfig()
		if typed == nil {
			return nil, fmt.Errorf("%s: typed_config: required", where)
		}
		last := i == len(entries)-1
		if typed.MessageName() == xdscheck.RouterType {
			if !last {
				return nil, fmt.Errorf("%s: the router must be the last filter", where)
			}
			if err := checkRouter(typed); err != nil {
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			continue
		}
		factory, config, err := r.factoryOf(typed)
		if err != nil {
			return nil, fmt.Errorf("%s: typed_config: %w", where, err)
		}
		if factory == nil {
			return nil, fmt.Errorf("%s: typed config %q not supported", where, typed.GetTypeUrl())
		}
		if last {
			return nil, fmt.Errorf("%s: the last filter must be the router (%s)", where, routerName)
		}
		if seen[entry.GetName()] {
			return nil, fmt.Errorf("%s: duplicate filter name", where)
		}
		seen[entry.GetName()] = true
		f, err := factory.New(entry.GetName(), config, env)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", where, err)
		}
		chain = append(chain, f)
	}
	return chain, nil
}

// PerRouteTypes maps the name of each entry of http_filters to the
// per-route config type of its filter ("" for a filter without one, the
// router included); entries of unknown types are left out.
func (r *Registry) PerRouteTypes(entries []*hcmv3.HttpFilter) map[string]protoreflect.FullName {
	out := make(map[string]protoreflect.FullName, len(entries))
	for _, entry := range entries {
		switch name := entry.GetTypedConfig().MessageName(); {
		case r.byConfig[name] != nil:
			out[entry.GetName()] = r.byConfig[name].PerRouteType
		case name == xdscheck.RouterType:
			out[entry.GetName()] = ""
		case name == xdscheck.TypedStructType:
			out[entry.GetName()] = xdscheck.FilterConfigType
		}
	}
	return out
}

// CompilePerFilterConfig compiles one typed_per_filter_config value, keyed
// name, with the factory of its type: router.PerFilterCompiler.
func (r *Registry) CompilePerFilterConfig(name string, config *anypb.Any) (any, error) {
	if config.MessageName() == xdscheck.FilterConfigType {
		fc := new(routev3.FilterConfig)
		if err := config.UnmarshalTo(fc); err != nil {
			return nil, fmt.Errorf("decode %s: %w", config.MessageName(), err)
		}
		if fc.GetConfig().MessageName() != xdscheck.TypedStructType {
			return nil, fmt.Errorf("config: typed config %q not supported", fc.GetConfig().GetTypeUrl())
		}
		factory, value, err := r.factoryOf(fc.GetConfig())
		if err != nil {
			return nil, fmt.Errorf("config: %w", err)
		}
		return factory.NewPerRoute(value)
	}
	factory := r.byPerRoute[config.MessageName()]
	if factory == nil {
		return nil, fmt.Errorf("typed config %q not supported", config.GetTypeUrl())
	}
	msg, err := config.UnmarshalNew()
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", config.MessageName(), err)
	}
	return factory.NewPerRoute(msg)
}
