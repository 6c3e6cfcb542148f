package xdsnode

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// OutboundTCP is one outbound TCP listener of a sidecar (KeyOutboundTCP):
// a local address whose connections go to a TCP service port, as
// Consul's explicit upstreams.
type OutboundTCP struct {
	// Service and Namespace name the service ("" Namespace: the
	// sidecar's).
	Service, Namespace string
	// Port is the service port.
	Port int32
	// Address is the ip:port the listener binds.
	Address string
}

// String is the entry as written: service[.namespace]:port=ip:port.
func (o OutboundTCP) String() string {
	target := o.Service
	if o.Namespace != "" {
		target += "." + o.Namespace
	}
	return target + ":" + strconv.Itoa(int(o.Port)) + "=" + o.Address
}

// ParseOutboundTCP reads one entry: service[.namespace]:port=ip:port.
func ParseOutboundTCP(entry string) (OutboundTCP, error) {
	var o OutboundTCP
	target, addr, ok := strings.Cut(strings.TrimSpace(entry), "=")
	if !ok {
		return o, fmt.Errorf("outbound TCP listener %q: want service[.namespace]:port=ip:port", entry)
	}
	name, port, ok := strings.Cut(target, ":")
	n, err := strconv.ParseUint(port, 10, 16)
	if !ok || err != nil || n == 0 || name == "" {
		return o, fmt.Errorf("outbound TCP listener %q: want service[.namespace]:port=ip:port (a port 1-65535)", entry)
	}
	o.Service, o.Namespace, _ = strings.Cut(name, ".")
	o.Port = int32(n)
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || ap.Port() == 0 {
		return o, fmt.Errorf("outbound TCP listener %q: the local address %q is not ip:port", entry, addr)
	}
	o.Address = ap.String()
	return o, nil
}

// ParseOutboundTCPList reads KeyOutboundTCP's value: entries separated by
// commas ("" for none).
func ParseOutboundTCPList(value string) ([]OutboundTCP, error) {
	var out []OutboundTCP
	for entry := range strings.SplitSeq(value, ",") {
		if strings.TrimSpace(entry) == "" {
			continue
		}
		o, err := ParseOutboundTCP(entry)
		if err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, nil
}
