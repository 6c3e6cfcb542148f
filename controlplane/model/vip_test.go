package model

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/meshgate/meshgate/policy"
)

func TestParseServiceVIPRange(t *testing.T) {
	t.Parallel()
	cases := []struct {
		in      string
		wantErr string
	}{
		{in: "240.240.0.0/16"},
		{in: "10.96.0.0/12"},
		{in: "240.240.7.0/24"},
		{in: "240.240.0.0/25", wantErr: "too small"},
		{in: "240.240.0.1/32", wantErr: "too small"},
		{in: "240.240.1.0/16", wantErr: "host bits set; the network is 240.240.0.0/16"},
		{in: "fd00::/64", wantErr: "must be IPv4"},
		{in: "240.240.0.0", wantErr: "not a CIDR"},
		{in: "", wantErr: "not a CIDR"},
	}
	for _, tc := range cases {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			p, err := ParseServiceVIPRange(tc.in)
			if tc.wantErr == "" {
				if err != nil || p.String() != tc.in {
					t.Fatalf("ParseServiceVIPRange(%q) = %v, %v; want the range", tc.in, p, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("ParseServiceVIPRange(%q) error = %v; want one containing %q", tc.in, err, tc.wantErr)
			}
		})
	}
}

func TestCheckDNSDomain(t *testing.T) {
	t.Parallel()
	for domain, ok := range map[string]bool{
		"meshgate.local": true, "cluster.local": true, "mesh": true,
		"": false, ".local": false, "meshgate.local.": false, "Mesh.local": false, "a_b.local": false,
		strings.Repeat("a.", 100) + "b": false,
	} {
		if err := CheckDNSDomain(domain); (err == nil) != ok {
			t.Errorf("CheckDNSDomain(%q) = %v; want ok=%v", domain, err, ok)
		}
	}
	if _, err := CompileWith(nil, CompileOptions{Addressing: ServiceAddressing{DNSDomain: "bad_domain"}}); err == nil {
		t.Error("CompileWith accepted an invalid DNS domain")
	}
}

// vips assigns the VIPs of the services named (namespace "default") in
// vipRange and returns them by name.
func vips(vipRange netip.Prefix, names ...string) map[string]netip.Addr {
	var services []*Service
	for _, n := range slices.Sorted(slices.Values(names)) {
		services = append(services, &Service{NamespacedName: NamespacedName{Namespace: "default", Name: n}})
	}
	assignVIPs(services, vipRange)
	out := map[string]netip.Addr{}
	for _, s := range services {
		out[s.Name] = s.VIP
	}
	return out
}

// colliding returns two service names, first sorting before second, with
// the same home address in vipRange, and a third name sorting after both
// whose home address is the one after it: found deterministically.
func colliding(t *testing.T, vipRange netip.Prefix) (first, second, neighbour string) {
	t.Helper()
	size := uint64(1)<<(32-vipRange.Bits()) - 2
	home := func(n string) uint64 { return homeSlot(NamespacedName{Namespace: "default", Name: n}, size) }
	byHome := map[uint64]string{}
	for i := range 100000 {
		n := fmt.Sprintf("svc-%05d", i)
		if prev, ok := byHome[home(n)]; ok && first == "" {
			first, second = prev, n
			continue
		}
		byHome[home(n)] = n
		if first != "" && home(n) == (home(first)+1)%size && n > second {
			return first, second, n
		}
	}
	t.Fatal("no colliding names found")
	return
}

// TestServiceVIPsStable: the VIP assignment is a function of the names and
// the range (any order, every run gives the same), and a service keeps its
// VIP while others come and go, except as documented when a service that
// sorts before it takes its home address.
func TestServiceVIPsStable(t *testing.T) {
	t.Parallel()
	small := netip.MustParsePrefix("240.240.7.0/24")
	first, second, neighbour := colliding(t, small)
	base := []string{"orders", "payments", "inventory", "users", "zeta"}
	cases := []struct {
		name      string
		vipRange  netip.Prefix
		before    []string
		after     []string
		wantMoved []string // the services of both sets whose VIP changes
	}{
		{name: "a service added", vipRange: DefaultServiceVIPRange, before: base, after: append(slices.Clone(base), "aardvark")},
		{name: "a service removed", vipRange: DefaultServiceVIPRange, before: base, after: base[1:]},
		{name: "many added and removed", vipRange: DefaultServiceVIPRange, before: base,
			after: append(slices.Clone(base[2:]), "a", "b", "c", "d", "e", "f", "g", "h")},
		{name: "small range, unrelated services come", vipRange: small, before: []string{first, second}, after: []string{first, second, "orders", "users"}},
		// second probed past first's home: it keeps its address when a
		// service that sorts after it takes the next one.
		{name: "collision: the later name probes, a later name does not move it", vipRange: small,
			before: []string{first, second}, after: []string{first, second, neighbour}},
		{name: "collision: a later colliding name does not move the earlier", vipRange: small,
			before: []string{first}, after: []string{first, second}},
		// The documented exception: the service that sorts first keeps
		// (or takes) the home address.
		{name: "collision: an earlier colliding name takes the home address", vipRange: small,
			before: []string{second}, after: []string{first, second}, wantMoved: []string{second}},
		{name: "collision: the earlier name removed, the later returns home", vipRange: small,
			before: []string{first, second}, after: []string{second}, wantMoved: []string{second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before, after := vips(tc.vipRange, tc.before...), vips(tc.vipRange, tc.after...)
			reversed := slices.Clone(tc.after)
			slices.Reverse(reversed)
			if again := vips(tc.vipRange, reversed...); !maps.Equal(again, after) {
				t.Errorf("the same services in another order got other VIPs: %v, then %v", after, again)
			}
			var moved []string
			for name, vip := range after {
				if !tc.vipRange.Contains(vip) || vip == tc.vipRange.Addr() {
					t.Errorf("%s: VIP %v not a usable address of %s", name, vip, tc.vipRange)
				}
				if old, ok := before[name]; ok && old != vip {
					moved = append(moved, name)
				}
			}
			slices.Sort(moved)
			if !slices.Equal(moved, tc.wantMoved) {
				t.Errorf("moved %v (before %v, after %v); want %v moved", moved, before, after, tc.wantMoved)
			}
			seen := map[netip.Addr]string{}
			for name, vip := range after {
				if other, dup := seen[vip]; dup {
					t.Errorf("%s and %s share VIP %s", name, other, vip)
				}
				seen[vip] = name
			}
		})
	}
}

// TestServiceVIPsFullRange: a /24 has 254 usable addresses (not the network
// and broadcast addresses); a service beyond them gets no VIP.
func TestServiceVIPsFullRange(t *testing.T) {
	t.Parallel()
	small := netip.MustParsePrefix("240.240.7.0/24")
	var names []string
	for i := range 255 {
		names = append(names, fmt.Sprintf("s%03d", i))
	}
	got := vips(small, names...)
	seen := map[netip.Addr]bool{}
	for _, vip := range got {
		if vip.IsValid() {
			seen[vip] = true
		}
	}
	if len(seen) != 254 || got["s254"].IsValid() {
		t.Errorf("%d distinct VIPs, s254 got %v; want 254 and none for the last", len(seen), got["s254"])
	}
	for _, edge := range []string{"240.240.7.0", "240.240.7.255"} {
		if seen[netip.MustParseAddr(edge)] {
			t.Errorf("%s assigned", edge)
		}
	}
}

// TestCompileAddressesServices: compiled services have a VIP in the
// configured range and their DNS names in the configured domain.
func TestCompileAddressesServices(t *testing.T) {
	t.Parallel()
	set := &policy.Set{Services: []*policy.Service{
		{Name: "orders", Namespace: "shop", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80}}}},
		{Name: "users", Spec: policy.ServiceSpec{Ports: []policy.ServicePort{{Port: 80}}}},
	}}
	vipRange := netip.MustParsePrefix("10.200.0.0/16")
	m, err := CompileWith(set, CompileOptions{Addressing: ServiceAddressing{VIPRange: vipRange, DNSDomain: "mesh.example"}})
	if err != nil {
		t.Fatal(err)
	}
	orders := m.Service("shop", "orders")
	if !vipRange.Contains(orders.VIP) {
		t.Errorf("orders VIP %v not in %s", orders.VIP, vipRange)
	}
	if want := []string{"orders", "orders.shop", "orders.shop.svc.mesh.example"}; !slices.Equal(orders.Hostnames, want) {
		t.Errorf("orders hostnames %v; want %v", orders.Hostnames, want)
	}
	def, err := Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	users := def.Service("default", "users")
	if !DefaultServiceVIPRange.Contains(users.VIP) || users.Hostnames[2] != "users.default.svc.meshgate.local" {
		t.Errorf("by default users has VIP %v and names %v; want one in %s, domain meshgate.local", users.VIP, users.Hostnames, DefaultServiceVIPRange)
	}
}
