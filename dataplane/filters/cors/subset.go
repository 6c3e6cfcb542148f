package cors

import (
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// Names of the CORS typed configs (docs/xds.md "CORS").
const (
	configType   protoreflect.FullName = "envoy.extensions.filters.http.cors.v3.Cors"
	perRouteType protoreflect.FullName = "envoy.extensions.filters.http.cors.v3.CorsPolicy"
)

// MaxOrigins bounds allow_origin_string_match: each is tried in turn on
// every request with an Origin.
const MaxOrigins = 256

// subsetRules is the CORS filter's part of the subset of docs/xds.md: the
// listener-level Cors (Envoy's has no field), and per route a CorsPolicy
// with its origins (StringMatchers of the core subset), methods, headers,
// exposed headers, max age, credentials, private network access and
// whether preflights from other origins are forwarded. filter_enabled and
// shadow_enabled (runtime fractions) are NACKed; so is a header value the
// proxy could not send (checkHeaderValues).
func subsetRules() xdscheck.Rules {
	return xdscheck.Rules{
		configType: xdscheck.Allow(),
		perRouteType: xdscheck.Allow("allow_methods", "allow_headers", "expose_headers", "max_age",
			"allow_credentials", "allow_private_network_access", "forward_not_matching_preflights").
			With("allow_origin_string_match", xdscheck.Field{MaxItems: MaxOrigins}).
			CheckedBy(checkHeaderValues),
	}
}

// checkHeaderValues requires the string fields, sent as response header
// values, to be valid ones (no control characters).
func checkHeaderValues(m protoreflect.Message) []xdscheck.Violation {
	var out []xdscheck.Violation
	for _, name := range []protoreflect.Name{"allow_methods", "allow_headers", "expose_headers", "max_age"} {
		fd := m.Descriptor().Fields().ByName(name)
		if fd == nil {
			continue
		}
		for _, c := range []byte(m.Get(fd).String()) {
			if c < ' ' && c != '\t' || c == 0x7f {
				out = append(out, xdscheck.Violation{Path: string(name), Reason: "not a valid header value (control character)"})
				break
			}
		}
	}
	return out
}
