package rbac

import (
	"fmt"

	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
)

// FromHTTPFilters compiles the RBAC filters of an HttpConnectionManager's
// http_filters (docs/xds.md: meshgate.rbac.deny, then meshgate.rbac.allow,
// then the router). deny and allow are nil when absent. Any other filter,
// an RBAC filter under another name, a duplicate, or a chain that does not
// end with exactly one router is an error naming the entry.
func FromHTTPFilters(filters []*hcmv3.HttpFilter) (deny, allow *Filter, err error) {
	if len(filters) == 0 {
		return nil, nil, fmt.Errorf("http_filters: the router (%s) is required", "envoy.filters.http.router")
	}
	for i, hf := range filters {
		where := fmt.Sprintf("http_filters[%d] %q", i, hf.GetName())
		if hf.GetDisabled() {
			return nil, nil, fmt.Errorf("%s: disabled: not supported", where)
		}
		anyCfg := hf.GetTypedConfig()
		if anyCfg == nil {
			return nil, nil, fmt.Errorf("%s: typed_config: required", where)
		}
		msg, err := anyCfg.UnmarshalNew()
		if err != nil {
			return nil, nil, fmt.Errorf("%s: typed_config: %w", where, err)
		}
		last := i == len(filters)-1
		switch cfg := msg.(type) {
		case *routerv3.Router:
			if !last {
				return nil, nil, fmt.Errorf("%s: the router must be the last filter", where)
			}
			if !proto.Equal(cfg, &routerv3.Router{}) {
				return nil, nil, fmt.Errorf("%s: only an empty Router is supported", where)
			}
		case *rbacv3.RBAC:
			if last {
				return nil, nil, fmt.Errorf("%s: the last filter must be the router", where)
			}
			var slot **Filter
			switch hf.GetName() {
			case DenyFilterName:
				slot = &deny
			case AllowFilterName:
				slot = &allow
			default:
				return nil, nil, fmt.Errorf("%s: an RBAC filter must be named %s or %s", where, DenyFilterName, AllowFilterName)
			}
			if *slot != nil {
				return nil, nil, fmt.Errorf("%s: duplicate filter", where)
			}
			f, err := Compile(cfg)
			if err != nil {
				return nil, nil, fmt.Errorf("%s: %w", where, err)
			}
			*slot = f
		default:
			return nil, nil, fmt.Errorf("%s: typed config %q not supported", where, anyCfg.GetTypeUrl())
		}
	}
	return deny, allow, nil
}
