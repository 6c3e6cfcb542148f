package model

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"net/netip"
	"strings"

	"github.com/meshgate/meshgate/api/dnslabel"
	"github.com/meshgate/meshgate/api/servicemeta"
)

// DefaultServiceVIPRange is the range of the services' virtual IPs when none
// is configured: 240.240.0.0/16, the reserved (class E) block Istio's
// automatic allocation uses, which no host or network routes.
var DefaultServiceVIPRange = netip.MustParsePrefix("240.240.0.0/16")

// MaxServiceVIPPrefixLen is the smallest range accepted: a /24, 254
// addresses. A smaller one would make collisions (and the moves they cause)
// common.
const MaxServiceVIPPrefixLen = 24

// ServiceAddressing is how the compiler addresses the services: the range
// their virtual IPs are taken from and the DNS domain of their names. The
// zero value means the defaults.
type ServiceAddressing struct {
	// VIPRange is an IPv4 network (CheckServiceVIPRange);
	// DefaultServiceVIPRange when invalid (zero).
	VIPRange netip.Prefix
	// DNSDomain is the mesh's DNS domain; servicemeta.DefaultDNSDomain
	// when empty.
	DNSDomain string
}

func (a ServiceAddressing) withDefaults() ServiceAddressing {
	if !a.VIPRange.IsValid() {
		a.VIPRange = DefaultServiceVIPRange
	}
	if a.DNSDomain == "" {
		a.DNSDomain = servicemeta.DefaultDNSDomain
	}
	return a
}

// Check reports what is wrong with a's range and domain.
func (a ServiceAddressing) Check() error {
	a = a.withDefaults()
	if err := CheckServiceVIPRange(a.VIPRange); err != nil {
		return err
	}
	return CheckDNSDomain(a.DNSDomain)
}

// ParseServiceVIPRange parses and checks a range of service virtual IPs in
// CIDR notation ("240.240.0.0/16").
func ParseServiceVIPRange(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("service VIP range %q: not a CIDR (as 240.240.0.0/16): %w", s, err)
	}
	if err := CheckServiceVIPRange(p); err != nil {
		return netip.Prefix{}, err
	}
	return p, nil
}

// CheckServiceVIPRange requires p to be an IPv4 network address (no host
// bits set) of at least 256 addresses (MaxServiceVIPPrefixLen).
func CheckServiceVIPRange(p netip.Prefix) error {
	switch {
	case !p.IsValid():
		return errors.New("service VIP range: not a valid CIDR")
	case !p.Addr().Is4():
		return fmt.Errorf("service VIP range %s: must be IPv4", p)
	case p.Masked() != p:
		return fmt.Errorf("service VIP range %s: has host bits set; the network is %s", p, p.Masked())
	case p.Bits() > MaxServiceVIPPrefixLen:
		return fmt.Errorf("service VIP range %s: too small, at least a /%d (256 addresses) is needed", p, MaxServiceVIPPrefixLen)
	}
	return nil
}

// CheckDNSDomain requires domain to be dot-separated DNS labels (no
// leading or trailing dot), at most 200 characters so that every
// service's full name fits DNS's 253.
func CheckDNSDomain(domain string) error {
	if domain == "" || len(domain) > 200 {
		return fmt.Errorf("DNS domain %q: must be 1 to 200 characters", domain)
	}
	for label := range strings.SplitSeq(domain, ".") {
		if err := dnslabel.Check(label); err != nil {
			return fmt.Errorf("DNS domain %q: label %q %w", domain, label, err)
		}
	}
	return nil
}

// assignVIPs gives each service (services sorted by namespace, then name)
// an address of the range: its home address, a hash of namespace/name
// into the range's usable addresses (all but the first and the last), or
// when a service earlier in the order holds it, the next free address
// after it (wrapping). The assignment is a function of the set of names
// and the range alone: every replica and every restart computes the same.
// A service's address changes only when another service that sorts
// before it comes or goes and its probe reaches that address (see
// docs/transparent.md). Services beyond the range's capacity get none.
func assignVIPs(services []*Service, vipRange netip.Prefix) {
	first := vipRange.Addr().Next() // skip the network address
	size := uint64(1)<<(32-vipRange.Bits()) - 2
	taken := make(map[uint64]bool, len(services))
	for _, svc := range services {
		if uint64(len(taken)) == size {
			return
		}
		slot := homeSlot(svc.NamespacedName, size)
		for taken[slot] {
			slot = (slot + 1) % size
		}
		taken[slot] = true
		svc.VIP = addAddr(first, slot)
	}
}

// homeSlot is the first slot of name's probe: FNV-1a of "namespace/name"
// modulo the number of slots.
func homeSlot(name NamespacedName, size uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name.Namespace))
	h.Write([]byte{'/'})
	h.Write([]byte(name.Name))
	return h.Sum64() % size
}

// addAddr is the IPv4 address n after a.
func addAddr(a netip.Addr, n uint64) netip.Addr {
	b := a.As4()
	var out [4]byte
	binary.BigEndian.PutUint32(out[:], binary.BigEndian.Uint32(b[:])+uint32(n))
	return netip.AddrFrom4(out)
}
