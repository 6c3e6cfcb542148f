// Package descriptor makes the rate limit descriptors of a request from
// Envoy's route rate limit actions (envoy.config.route.v3.RateLimit), for
// the local and the global rate limit filters: generic_key,
// remote_address, masked_remote_address, request_headers and metadata (the
// request's dynamic metadata the authentication filters set).
package descriptor

import (
	"errors"
	"fmt"
	"net/http"
	"net/netip"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
)

// Envoy's descriptor keys of the actions without one of their own.
const (
	keyGenericKey    = "generic_key"
	keyRemoteAddress = "remote_address"
	keyMaskedAddress = "masked_remote_address"
)

// MaxActions bounds the actions of one RateLimit.
const MaxActions = 8

// Entry is one descriptor entry.
type Entry struct{ Key, Value string }

// Action makes one descriptor entry of a request; ok false when it cannot
// (a header is absent), and then the whole descriptor is not made.
type Action func(r *http.Request) (e Entry, ok bool)

// Compile compiles a RateLimit's actions.
func Compile(rl *routev3.RateLimit) ([]Action, error) {
	var acts []Action
	for j, a := range rl.GetActions() {
		act, err := compileAction(a)
		if err != nil {
			return nil, fmt.Errorf("actions[%d].%w", j, err)
		}
		acts = append(acts, act)
	}
	return acts, nil
}

// Make appends the entries acts make of r to buf; ok false when one
// cannot.
func Make(r *http.Request, acts []Action, buf []Entry) ([]Entry, bool) {
	for _, act := range acts {
		e, made := act(r)
		if !made {
			return buf, false
		}
		buf = append(buf, e)
	}
	return buf, true
}

func compileAction(a *routev3.RateLimit_Action) (Action, error) {
	switch s := a.GetActionSpecifier().(type) {
	case *routev3.RateLimit_Action_GenericKey_:
		e := Entry{Key: s.GenericKey.GetDescriptorKey(), Value: s.GenericKey.GetDescriptorValue()}
		if e.Key == "" {
			e.Key = keyGenericKey
		}
		if e.Value == "" {
			return nil, errors.New("generic_key.descriptor_value: required")
		}
		return func(*http.Request) (Entry, bool) { return e, true }, nil
	case *routev3.RateLimit_Action_RemoteAddress_:
		return func(r *http.Request) (Entry, bool) {
			ip := RemoteIP(r)
			return Entry{Key: keyRemoteAddress, Value: ip.String()}, ip.IsValid()
		}, nil
	case *routev3.RateLimit_Action_MaskedRemoteAddress_:
		v4, v6 := 32, 128
		if v := s.MaskedRemoteAddress.GetV4PrefixMaskLen(); v != nil {
			if v.GetValue() > 32 {
				return nil, fmt.Errorf("masked_remote_address.v4_prefix_mask_len: %d: want at most 32", v.GetValue())
			}
			v4 = int(v.GetValue())
		}
		if v := s.MaskedRemoteAddress.GetV6PrefixMaskLen(); v != nil {
			if v.GetValue() > 128 {
				return nil, fmt.Errorf("masked_remote_address.v6_prefix_mask_len: %d: want at most 128", v.GetValue())
			}
			v6 = int(v.GetValue())
		}
		return func(r *http.Request) (Entry, bool) {
			ip := RemoteIP(r)
			if !ip.IsValid() {
				return Entry{}, false
			}
			bits := v6
			if ip.Is4() {
				bits = v4
			}
			p, err := ip.Prefix(bits)
			return Entry{Key: keyMaskedAddress, Value: p.String()}, err == nil
		}, nil
	case *routev3.RateLimit_Action_RequestHeaders_:
		name := http.CanonicalHeaderKey(s.RequestHeaders.GetHeaderName())
		key := s.RequestHeaders.GetDescriptorKey()
		if name == "" || key == "" {
			return nil, errors.New("request_headers: header_name and descriptor_key are required")
		}
		return func(r *http.Request) (Entry, bool) {
			v := r.Header[name]
			if len(v) == 0 {
				return Entry{}, false
			}
			return Entry{Key: key, Value: v[0]}, true
		}, nil
	case *routev3.RateLimit_Action_Metadata:
		return compileMetadata(s.Metadata)
	}
	return nil, errors.New("action: one of generic_key, remote_address, masked_remote_address, request_headers, metadata is required")
}

// Where meshgate's authentication filters put the request's principal
// (api/logformat's %DYNAMIC_METADATA(meshgate.authn:principal)%): a
// metadata action reading PrincipalNamespace, path PrincipalPath, makes
// an entry of httpfilter.Principal: the JWT's sub, the API consumer, the
// basic-auth user, else the mTLS peer's SPIFFE ID.
const PrincipalNamespace = "meshgate.authn"

// PrincipalPath is the path, in PrincipalNamespace, of the principal's
// name.
var PrincipalPath = [...]string{"principal", "name"}

// MaxMetadataPath bounds the path of a metadata action.
const MaxMetadataPath = 8

// compileMetadata compiles a metadata action: a string value of the
// request's dynamic metadata (source DYNAMIC; what the authentication
// filters set, httpfilter.Auth). Absent, or not a string, the descriptor is
// not made (there is no default_value nor skip_if_absent).
func compileMetadata(m *routev3.RateLimit_Action_MetaData) (Action, error) {
	key := m.GetDescriptorKey()
	if key == "" {
		return nil, errors.New("metadata.descriptor_key: required")
	}
	if m.GetSource() != routev3.RateLimit_Action_MetaData_DYNAMIC {
		return nil, fmt.Errorf("metadata.source: %v: only DYNAMIC is supported", m.GetSource())
	}
	if m.GetDefaultValue() != "" || m.GetSkipIfAbsent() {
		return nil, errors.New("metadata: default_value and skip_if_absent are not supported")
	}
	ns := m.GetMetadataKey().GetKey()
	if ns == "" {
		return nil, errors.New("metadata.metadata_key.key: required")
	}
	segs := m.GetMetadataKey().GetPath()
	if len(segs) == 0 || len(segs) > MaxMetadataPath {
		return nil, fmt.Errorf("metadata.metadata_key.path: %d segments: want 1 to %d", len(segs), MaxMetadataPath)
	}
	path := make([]string, len(segs))
	for i, seg := range segs {
		if path[i] = seg.GetKey(); path[i] == "" {
			return nil, fmt.Errorf("metadata.metadata_key.path[%d].key: required", i)
		}
	}
	if ns == PrincipalNamespace && len(path) == len(PrincipalPath) && path[0] == PrincipalPath[0] && path[1] == PrincipalPath[1] {
		return func(r *http.Request) (Entry, bool) {
			p := httpfilter.Principal(r.Context())
			return Entry{Key: key, Value: p}, p != ""
		}, nil
	}
	return func(r *http.Request) (Entry, bool) {
		v, ok := authMetadata(r, ns, path)
		return Entry{Key: key, Value: v}, ok && v != ""
	}, nil
}

// authMetadata is the string at path (its first element the metadata key)
// in namespace ns of the request's authentication metadata.
func authMetadata(r *http.Request, ns string, path []string) (string, bool) {
	a := httpfilter.AuthFrom(r.Context())
	if a == nil || a.MetadataNamespace != ns || a.MetadataKey != path[0] {
		return "", false
	}
	var v any = a.Metadata
	for _, key := range path[1:] {
		m, ok := v.(map[string]any)
		if !ok {
			return "", false
		}
		if v, ok = m[key]; !ok {
			return "", false
		}
	}
	s, ok := v.(string)
	return s, ok
}

// RemoteIP is the IP of r.RemoteAddr ("ip:port" or a bare IP), unmapped,
// without zone; the zero Addr when it does not parse.
func RemoteIP(r *http.Request) netip.Addr {
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		return ap.Addr().Unmap().WithZone("")
	}
	if a, err := netip.ParseAddr(r.RemoteAddr); err == nil {
		return a.Unmap().WithZone("")
	}
	return netip.Addr{}
}
