// Package servicemeta is the wire form of a mesh service's addresses: the
// virtual IP the control plane assigns to the service and the DNS names it
// answers to, carried in every cluster of the service as
// metadata.filter_metadata["meshgate.dev/service"] (docs/xds.md). The
// control plane encodes it and the proxies decode it with this package only.
package servicemeta

import (
	"errors"
	"fmt"
	"net/netip"

	"google.golang.org/protobuf/types/known/structpb"
)

// Key is the cluster filter_metadata namespace holding a Service.
const Key = "meshgate.dev/service"

// The fields of the Struct under Key.
const (
	FieldVIP       = "vip"
	FieldHostnames = "hostnames"
)

// DefaultDNSDomain is the mesh's DNS domain when none is configured: a
// service answers to "<name>.<namespace>.svc.meshgate.local".
const DefaultDNSDomain = "meshgate.local"

// MaxHostnames bounds the hostnames a proxy accepts for one service.
const MaxHostnames = 16

// Service is what a cluster says of the mesh service it belongs to.
type Service struct {
	// VIP is the service's virtual IPv4 address; invalid (the zero
	// netip.Addr) when it has none (the range is full).
	VIP netip.Addr
	// Hostnames are the names the service answers to, shortest first
	// (Hostnames).
	Hostnames []string
}

// Hostnames are the DNS names of the service namespace/name in the mesh
// domain: "name", "name.namespace" and "name.namespace.svc.<domain>", as a
// Kubernetes pod in namespace resolves them with its search domains.
func Hostnames(namespace, name, domain string) []string {
	return []string{name, name + "." + namespace, name + "." + namespace + ".svc." + domain}
}

// Struct encodes s as the value of Key.
func (s Service) Struct() *structpb.Struct {
	fields := map[string]*structpb.Value{}
	if s.VIP.IsValid() {
		fields[FieldVIP] = structpb.NewStringValue(s.VIP.String())
	}
	names := make([]*structpb.Value, len(s.Hostnames))
	for i, h := range s.Hostnames {
		names[i] = structpb.NewStringValue(h)
	}
	fields[FieldHostnames] = structpb.NewListValue(&structpb.ListValue{Values: names})
	return &structpb.Struct{Fields: fields}
}

// Parse decodes the value of Key. A nil Struct is no service (the zero
// Service, no error). Unknown fields are ignored (a newer control plane
// may add some); a vip that is not an IPv4 address, or hostnames that are
// not a list of at most MaxHostnames non-empty strings, are errors naming
// the field.
func Parse(st *structpb.Struct) (Service, error) {
	var s Service
	if st == nil {
		return s, nil
	}
	if v, ok := st.GetFields()[FieldVIP]; ok {
		str, ok := v.GetKind().(*structpb.Value_StringValue)
		if !ok {
			return Service{}, fmt.Errorf("%s.%s: must be a string", Key, FieldVIP)
		}
		addr, err := netip.ParseAddr(str.StringValue)
		if err != nil || !addr.Is4() {
			return Service{}, fmt.Errorf("%s.%s: %q is not an IPv4 address", Key, FieldVIP, str.StringValue)
		}
		s.VIP = addr
	}
	if v, ok := st.GetFields()[FieldHostnames]; ok {
		list, ok := v.GetKind().(*structpb.Value_ListValue)
		if !ok {
			return Service{}, fmt.Errorf("%s.%s: must be a list", Key, FieldHostnames)
		}
		values := list.ListValue.GetValues()
		if len(values) > MaxHostnames {
			return Service{}, fmt.Errorf("%s.%s: %d names, at most %d", Key, FieldHostnames, len(values), MaxHostnames)
		}
		for i, hv := range values {
			h, ok := hv.GetKind().(*structpb.Value_StringValue)
			if !ok || h.StringValue == "" || len(h.StringValue) > 253 {
				return Service{}, fmt.Errorf("%s.%s[%d]: %w", Key, FieldHostnames, i, errBadHostname)
			}
			s.Hostnames = append(s.Hostnames, h.StringValue)
		}
	}
	return s, nil
}

var errBadHostname = errors.New("must be a DNS name of 1 to 253 characters")
