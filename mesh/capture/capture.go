// Package capture installs and removes the nftables rules of a transparent
// sidecar in the current network namespace: the application's outbound TCP
// redirected to the sidecar's capture port, inbound TCP for the service's
// ports to its inbound listener, and optionally DNS to its resolver, all in
// meshgate's own table so that removing that table restores the namespace.
package capture

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Defaults of docs/transparent.md.
const (
	// DefaultTable is the name of meshgate's table (family inet).
	DefaultTable = "meshgate"
	// DefaultOutboundPort is the port of the sidecar's capture listener
	// (127.0.0.1 and ::1) the application's outbound TCP is redirected to.
	DefaultOutboundPort = 15002
)

// Config is what the rules capture.
type Config struct {
	// Table is the inet table holding every rule; DefaultTable when empty.
	Table string
	// OutboundPort is the local port outbound TCP is redirected to; 0: no
	// outbound capture.
	OutboundPort uint16
	// InboundPort is the port of the sidecar's inbound listener, inbound
	// TCP for InboundPorts is redirected to; 0: no inbound capture.
	InboundPort uint16
	// InboundPorts are the application's ports whose inbound TCP is
	// redirected to InboundPort.
	InboundPorts []uint16
	// DNSPort, when not 0, is the local port DNS (UDP and TCP port 53) of
	// the application is redirected to.
	DNSPort uint16
	// ExcludeUIDs and ExcludeGIDs are the socket owners whose traffic is
	// never captured: the sidecar's own (its upstream connections would
	// loop back to it otherwise).
	ExcludeUIDs []uint32
	ExcludeGIDs []uint32
	// ExcludeMark, when not 0, is a packet mark whose traffic is never
	// captured.
	ExcludeMark uint32
	// IncludeCIDRs, when any, are the only destinations captured;
	// ExcludeCIDRs are never captured (they win over IncludeCIDRs).
	IncludeCIDRs, ExcludeCIDRs []netip.Prefix
	// IncludePorts, when any, are the only outbound destination ports
	// captured; ExcludePorts are never captured.
	IncludePorts, ExcludePorts []uint16
	// NetNS, when not 0, is a file descriptor of the network namespace to
	// work in; 0: the current one.
	NetNS int
}

// table is c's table name.
func (c Config) table() string {
	if c.Table == "" {
		return DefaultTable
	}
	return c.Table
}

// Check reports the first inconsistency of c.
func (c Config) Check() error {
	if c.OutboundPort == 0 && c.InboundPort == 0 && c.DNSPort == 0 {
		return errors.New("capture: nothing to capture: set an outbound, inbound or DNS port")
	}
	if c.InboundPort != 0 && len(c.InboundPorts) == 0 {
		return errors.New("capture: inbound port set without the application ports to redirect to it")
	}
	if len(c.InboundPorts) > 0 && c.InboundPort == 0 {
		return errors.New("capture: application ports set without the inbound port to redirect them to")
	}
	if slices.Contains(c.InboundPorts, 0) || slices.Contains(c.IncludePorts, 0) || slices.Contains(c.ExcludePorts, 0) {
		return errors.New("capture: port 0 in a port list")
	}
	for _, p := range append(slices.Clone(c.IncludeCIDRs), c.ExcludeCIDRs...) {
		if !p.IsValid() {
			return errors.New("capture: invalid CIDR")
		}
	}
	return nil
}

// conn opens the netlink connection of c's namespace.
func (c Config) conn() (*nftables.Conn, error) {
	var opts []nftables.ConnOption
	if c.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(c.NetNS))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("capture: netlink: %w", err)
	}
	return conn, nil
}

// Install replaces meshgate's table with the rules of c, atomically: the
// namespace has either the old rules or the new ones.
func Install(c Config) error {
	if err := c.Check(); err != nil {
		return err
	}
	conn, err := c.conn()
	if err != nil {
		return err
	}
	t := &nftables.Table{Family: nftables.TableFamilyINet, Name: c.table()}
	// Add (a no-op when present), delete, add: one batch that works
	// whether the table existed or not.
	conn.AddTable(t)
	conn.DelTable(t)
	conn.AddTable(t)
	output := conn.AddChain(&nftables.Chain{
		Name: "output", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookOutput, Priority: nftables.ChainPriorityNATDest,
	})
	prerouting := conn.AddChain(&nftables.Chain{
		Name: "prerouting", Table: t, Type: nftables.ChainTypeNAT,
		Hooknum: nftables.ChainHookPrerouting, Priority: nftables.ChainPriorityNATDest,
	})
	for _, r := range outputRules(c) {
		conn.AddRule(&nftables.Rule{Table: t, Chain: output, Exprs: r})
	}
	for _, r := range preroutingRules(c) {
		conn.AddRule(&nftables.Rule{Table: t, Chain: prerouting, Exprs: r})
	}
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("capture: install table inet %s: %w", c.table(), err)
	}
	return nil
}

// Remove deletes meshgate's table, and nothing else; no table is no error.
func Remove(c Config) error {
	conn, err := c.conn()
	if err != nil {
		return err
	}
	present, err := Installed(c)
	if err != nil || !present {
		return err
	}
	conn.DelTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: c.table()})
	if err := conn.Flush(); err != nil {
		return fmt.Errorf("capture: remove table inet %s: %w", c.table(), err)
	}
	return nil
}

// Status is what Inspect finds of meshgate's table.
type Status struct {
	Installed bool
	// Rules counts the rules of each chain of the table.
	Rules map[string]int
}

// Installed reports whether meshgate's table is present.
func Installed(c Config) (bool, error) {
	s, err := Inspect(c)
	return s.Installed, err
}

// Inspect reads meshgate's table back.
func Inspect(c Config) (Status, error) {
	conn, err := c.conn()
	if err != nil {
		return Status{}, err
	}
	tables, err := conn.ListTablesOfFamily(nftables.TableFamilyINet)
	if err != nil {
		return Status{}, fmt.Errorf("capture: list tables: %w", err)
	}
	var t *nftables.Table
	for _, tt := range tables {
		if tt.Name == c.table() {
			t = tt
		}
	}
	if t == nil {
		return Status{}, nil
	}
	chains, err := conn.ListChainsOfTableFamily(nftables.TableFamilyINet)
	if err != nil {
		return Status{}, fmt.Errorf("capture: list chains: %w", err)
	}
	s := Status{Installed: true, Rules: map[string]int{}}
	for _, ch := range chains {
		if ch.Table.Name != t.Name {
			continue
		}
		rules, err := conn.GetRules(t, ch)
		if err != nil {
			return Status{}, fmt.Errorf("capture: list rules of chain %s: %w", ch.Name, err)
		}
		s.Rules[ch.Name] = len(rules)
	}
	return s, nil
}

// Registers the rules use.
const (
	reg1 = 1
)

// outputRules are the rules of the output chain, in order: the sidecar's
// own traffic and excluded destinations return first, DNS goes to DNSPort,
// loopback returns, the rest of TCP goes to OutboundPort.
func outputRules(c Config) [][]expr.Any {
	var rules [][]expr.Any
	for _, uid := range c.ExcludeUIDs {
		rules = append(rules, metaEq(expr.MetaKeySKUID, binaryutil.NativeEndian.PutUint32(uid), verdict(expr.VerdictReturn)))
	}
	for _, gid := range c.ExcludeGIDs {
		rules = append(rules, metaEq(expr.MetaKeySKGID, binaryutil.NativeEndian.PutUint32(gid), verdict(expr.VerdictReturn)))
	}
	if c.ExcludeMark != 0 {
		rules = append(rules, metaEq(expr.MetaKeyMARK, binaryutil.NativeEndian.PutUint32(c.ExcludeMark), verdict(expr.VerdictReturn)))
	}
	if c.DNSPort != 0 {
		for _, proto := range []byte{unix.IPPROTO_UDP, unix.IPPROTO_TCP} {
			r := metaEq(expr.MetaKeyL4PROTO, []byte{proto}, nil)
			r = append(r, destPortEq(53)...)
			rules = append(rules, append(r, redirect(c.DNSPort)...))
		}
	}
	if c.OutboundPort == 0 {
		return rules
	}
	rules = append(rules, metaEq(expr.MetaKeyOIFNAME, ifname("lo"), verdict(expr.VerdictReturn)))
	for _, p := range c.ExcludeCIDRs {
		rules = append(rules, append(daddrIn(p), verdict(expr.VerdictReturn)...))
	}
	for _, port := range c.ExcludePorts {
		r := metaEq(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_TCP}, nil)
		rules = append(rules, append(append(r, destPortEq(port)...), verdict(expr.VerdictReturn)...))
	}
	if len(c.IncludePorts) > 0 {
		// Only the included ports are redirected; the rest falls through.
		for _, port := range c.IncludePorts {
			rules = append(rules, redirectTCP(c, port)...)
		}
		return rules
	}
	return append(rules, redirectTCP(c, 0)...)
}

// redirectTCP are the rules redirecting TCP (to port, when not 0) to the
// outbound port: one for any destination, or one per included CIDR.
func redirectTCP(c Config, port uint16) [][]expr.Any {
	base := metaEq(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_TCP}, nil)
	if port != 0 {
		base = append(base, destPortEq(port)...)
	}
	if len(c.IncludeCIDRs) == 0 {
		return [][]expr.Any{append(base, redirect(c.OutboundPort)...)}
	}
	var rules [][]expr.Any
	for _, p := range c.IncludeCIDRs {
		r := append(slices.Clone(base), daddrIn(p)...)
		rules = append(rules, append(r, redirect(c.OutboundPort)...))
	}
	return rules
}

// preroutingRules redirect inbound TCP for the application's ports to the
// inbound listener; loopback returns.
func preroutingRules(c Config) [][]expr.Any {
	if c.InboundPort == 0 {
		return nil
	}
	rules := [][]expr.Any{metaEq(expr.MetaKeyIIFNAME, ifname("lo"), verdict(expr.VerdictReturn))}
	for _, port := range c.InboundPorts {
		r := metaEq(expr.MetaKeyL4PROTO, []byte{unix.IPPROTO_TCP}, nil)
		r = append(r, destPortEq(port)...)
		rules = append(rules, append(r, redirect(c.InboundPort)...))
	}
	return rules
}

// metaEq is "meta key == value", then then.
func metaEq(key expr.MetaKey, value []byte, then []expr.Any) []expr.Any {
	return append([]expr.Any{
		&expr.Meta{Key: key, Register: reg1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: value},
	}, then...)
}

// destPortEq is "th dport == port" (TCP and UDP share the offset).
func destPortEq(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: binaryutil.BigEndian.PutUint16(port)},
	}
}

// daddrIn is "ip daddr p" or "ip6 daddr p", with its family check.
func daddrIn(p netip.Prefix) []expr.Any {
	p = p.Masked()
	family, offset, size := byte(unix.NFPROTO_IPV4), uint32(16), uint32(4)
	if p.Addr().Is6() && !p.Addr().Is4In6() {
		family, offset, size = unix.NFPROTO_IPV6, 24, 16
	}
	mask := make([]byte, size)
	for i := range p.Bits() {
		mask[i/8] |= 0x80 >> (i % 8)
	}
	return append(metaEq(expr.MetaKeyNFPROTO, []byte{family}, nil),
		&expr.Payload{DestRegister: reg1, Base: expr.PayloadBaseNetworkHeader, Offset: offset, Len: size},
		&expr.Bitwise{SourceRegister: reg1, DestRegister: reg1, Len: size, Mask: mask, Xor: make([]byte, size)},
		&expr.Cmp{Op: expr.CmpOpEq, Register: reg1, Data: p.Addr().Unmap().AsSlice()},
	)
}

// redirect is "redirect to :port".
func redirect(port uint16) []expr.Any {
	return []expr.Any{
		&expr.Immediate{Register: reg1, Data: binaryutil.BigEndian.PutUint16(port)},
		&expr.Redir{RegisterProtoMin: reg1},
	}
}

// verdict is a verdict statement.
func verdict(k expr.VerdictKind) []expr.Any {
	return []expr.Any{&expr.Verdict{Kind: k}}
}

// ifname is an interface name as nftables compares it (IFNAMSIZ bytes).
func ifname(name string) []byte {
	b := make([]byte, unix.IFNAMSIZ)
	copy(b, name)
	return b
}
