package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

	"github.com/meshgate/meshgate/api/xdsnode"
)

// NodeID returns id when not empty, else the default node id of docs/xds.md:
// xdsnode.IDPrefix followed by <hostname>-<pid>.
func NodeID(role, name, namespace, id string) string {
	if id != "" {
		return id
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "localhost"
	}
	return fmt.Sprintf("%s%s-%d", xdsnode.IDPrefix(role, name, namespace), host, os.Getpid())
}

// CheckControlPlaneAddresses checks a list of control-plane addresses
// (host:port each, host may be a name).
func CheckControlPlaneAddresses(addrs []string) error {
	if len(addrs) == 0 {
		return fmt.Errorf("at least one control-plane address (--xds) is required")
	}
	for _, a := range addrs {
		host, port, err := net.SplitHostPort(a)
		if err != nil || host == "" {
			return fmt.Errorf("control-plane address %q: want host:port", a)
		}
		if err := checkPort(port); err != nil {
			return fmt.Errorf("control-plane address %q: %w", a, err)
		}
	}
	return nil
}

// CheckIPPort checks that addr is ip:port with a port in 1-65535; what names
// the flag or field in the error.
func CheckIPPort(what, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%s %q: want ip:port, e.g. 127.0.0.1:8080", what, addr)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("%s %q: %q is not an IP address", what, addr, host)
	}
	if err := checkPort(port); err != nil {
		return fmt.Errorf("%s %q: %w", what, addr, err)
	}
	return nil
}

func checkPort(port string) error {
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q: want 1-65535", port)
	}
	return nil
}

// maxZoneLength bounds a zone (a label value's length).
const maxZoneLength = 63

// WithZone checks zone (empty, or a label value: at most 63 letters,
// digits, '-', '_' and '.', starting and ending with a letter or digit)
// and sets it as node's locality.zone.
func WithZone(node *corev3.Node, zone string) (*corev3.Node, error) {
	if zone == "" {
		return node, nil
	}
	valid := len(zone) <= maxZoneLength && isAlnum(zone[0]) && isAlnum(zone[len(zone)-1])
	for i := 0; valid && i < len(zone); i++ {
		valid = isAlnum(zone[i]) || zone[i] == '-' || zone[i] == '_' || zone[i] == '.'
	}
	if !valid {
		return nil, fmt.Errorf("zone %q: want at most %d letters, digits, '-', '_' or '.', starting and ending with a letter or digit", zone, maxZoneLength)
	}
	node.Locality = &corev3.Locality{Zone: zone}
	return node, nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
