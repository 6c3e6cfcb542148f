package capture_test

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"

	"github.com/meshgate/meshgate/dataplane/origdst"
	"github.com/meshgate/meshgate/internal/netnstest"
	"github.com/meshgate/meshgate/mesh/capture"
)

// newNS is a fresh namespace, or a skip in -short mode without root.
func newNS(t *testing.T) *netnstest.NS {
	t.Helper()
	if why := netnstest.Available(); why != "" {
		if testing.Short() {
			t.Skip(why)
		}
		t.Fatal(why)
	}
	return netnstest.New(t)
}

// ruleset is every table, chain and rule of the namespace, as text.
func ruleset(t *testing.T, fd int) string {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	chains, err := conn.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, tb := range tables {
		lines = append(lines, fmt.Sprintf("table %d %s", tb.Family, tb.Name))
	}
	for _, ch := range chains {
		rules, err := conn.GetRules(ch.Table, ch)
		if err != nil {
			t.Fatal(err)
		}
		lines = append(lines, fmt.Sprintf("chain %d %s %s", ch.Table.Family, ch.Table.Name, ch.Name))
		for _, r := range rules {
			var es []string
			for _, e := range r.Exprs {
				es = append(es, fmt.Sprintf("%T%+v", e, e))
			}
			lines = append(lines, "  rule "+strings.Join(es, " "))
		}
	}
	slices.Sort(lines)
	return strings.Join(lines, "\n")
}

// addOtherTable gives the namespace a table of someone else's.
func addOtherTable(t *testing.T, fd int) {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tb := conn.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "firewall"})
	ch := conn.AddChain(&nftables.Chain{Name: "input", Table: tb, Type: nftables.ChainTypeFilter,
		Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityFilter})
	conn.AddRule(&nftables.Rule{Table: tb, Chain: ch, Exprs: []expr.Any{&expr.Counter{}}})
	if err := conn.Flush(); err != nil {
		t.Fatal(err)
	}
}

// redirectPorts are the ports the redirects of chain name go to.
func redirectPorts(t *testing.T, fd int, chain string) []uint16 {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(fd))
	if err != nil {
		t.Fatal(err)
	}
	tb := &nftables.Table{Family: nftables.TableFamilyINet, Name: capture.DefaultTable}
	rules, err := conn.GetRules(tb, &nftables.Chain{Name: chain, Table: tb})
	if err != nil {
		t.Fatal(err)
	}
	var ports []uint16
	for _, r := range rules {
		for i, e := range r.Exprs {
			if _, ok := e.(*expr.Redir); ok {
				imm := r.Exprs[i-1].(*expr.Immediate)
				ports = append(ports, uint16(imm.Data[0])<<8|uint16(imm.Data[1]))
			}
		}
	}
	return ports
}

func TestInstallRemoveRestoresRuleset(t *testing.T) {
	ns := newNS(t)
	addOtherTable(t, ns.FD())
	before := ruleset(t, ns.FD())
	cfg := capture.Config{
		NetNS: ns.FD(), OutboundPort: 15002, InboundPort: 15006, InboundPorts: []uint16{8080, 9090},
		DNSPort: 15053, ExcludeUIDs: []uint32{1337}, ExcludeGIDs: []uint32{1337}, ExcludeMark: 0x539,
		ExcludeCIDRs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("fd00::/8")},
		ExcludePorts: []uint16{22},
	}
	for range 2 { // a second install replaces the first
		if err := capture.Install(cfg); err != nil {
			t.Fatal(err)
		}
	}
	st, err := capture.Inspect(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// output: uid, gid, mark, DNS udp+tcp, lo, 2 CIDRs, 1 port, redirect;
	// prerouting: lo, 2 ports.
	want := map[string]int{"output": 10, "prerouting": 3}
	if !st.Installed || fmt.Sprint(st.Rules) != fmt.Sprint(want) {
		t.Fatalf("status = %+v, want installed with rules %v", st, want)
	}
	if got := redirectPorts(t, ns.FD(), "output"); !slices.Equal(got, []uint16{15053, 15053, 15002}) {
		t.Errorf("output redirects to %v", got)
	}
	if got := redirectPorts(t, ns.FD(), "prerouting"); !slices.Equal(got, []uint16{15006, 15006}) {
		t.Errorf("prerouting redirects to %v", got)
	}
	if ruleset(t, ns.FD()) == before {
		t.Fatal("install changed nothing")
	}
	for range 2 { // removing what is absent is no error
		if err := capture.Remove(cfg); err != nil {
			t.Fatal(err)
		}
	}
	if after := ruleset(t, ns.FD()); after != before {
		t.Fatalf("ruleset after remove:\n%s\nwant as before:\n%s", after, before)
	}
	if st, err := capture.Inspect(cfg); err != nil || st.Installed {
		t.Fatalf("status after remove = %+v, %v", st, err)
	}
}

func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  capture.Config
		want string
	}{
		{"nothing", capture.Config{}, "nothing to capture"},
		{"inbound without ports", capture.Config{InboundPort: 1}, "without the application ports"},
		{"ports without inbound", capture.Config{OutboundPort: 1, InboundPorts: []uint16{80}}, "without the inbound port"},
		{"port zero", capture.Config{OutboundPort: 1, ExcludePorts: []uint16{0}}, "port 0"},
		{"bad cidr", capture.Config{OutboundPort: 1, ExcludeCIDRs: []netip.Prefix{{}}}, "invalid CIDR"},
		{"ok", capture.Config{OutboundPort: 1}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.Check()
			if tc.want == "" && err != nil || tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)) {
				t.Fatalf("Check() = %v, want %q", err, tc.want)
			}
		})
	}
}

// TestRedirectKeepsOriginalDestination sends TCP from the namespace to
// addresses behind a dummy interface: captured ones reach the capture
// listener, which reads the address the client dialed; excluded ones and
// the excluded uid are not captured.
func TestRedirectKeepsOriginalDestination(t *testing.T) {
	ns := newNS(t)
	ns.MustRun(t, "ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1")
	ns.MustRun(t, "ip", "addr", "add", "10.9.0.1/24", "dev", "d0")
	ns.MustRun(t, "ip", "link", "set", "d0", "up")
	ns.MustRun(t, "ip", "link", "set", "d1", "up")
	var ln net.Listener
	var err error
	ns.Do(func() { ln, err = net.Listen("tcp", "127.0.0.1:0") })
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := uint16(ln.Addr().(*net.TCPAddr).Port)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			dst, err := origdst.Get(c)
			if err != nil {
				fmt.Fprintf(c, "error %v", err)
			} else {
				fmt.Fprint(c, dst.String())
			}
			c.Close()
		}
	}()
	cfg := capture.Config{NetNS: ns.FD(), OutboundPort: port, ExcludePorts: []uint16{22},
		ExcludeCIDRs: []netip.Prefix{netip.MustParsePrefix("10.9.0.128/25")}}
	if err := capture.Install(cfg); err != nil {
		t.Fatal(err)
	}
	dial := func(addr string) (string, error) {
		var c net.Conn
		var err error
		// Nothing answers behind the veth: a connection not captured
		// waits for ARP, and gives up at the deadline.
		ns.Do(func() { c, err = net.DialTimeout("tcp", addr, 500*time.Millisecond) })
		if err != nil {
			return "", err
		}
		defer c.Close()
		b, err := io.ReadAll(c)
		return string(b), err
	}
	for _, tc := range []struct {
		addr     string
		captured bool
	}{
		{"10.9.0.7:80", true},
		{"10.9.0.7:22", false},   // excluded port
		{"10.9.0.200:80", false}, // excluded CIDR
	} {
		got, err := dial(tc.addr)
		if tc.captured && (err != nil || got != tc.addr) {
			t.Errorf("dial %s: %q, %v; want captured with original destination %s", tc.addr, got, err, tc.addr)
		}
		if !tc.captured && err == nil {
			t.Errorf("dial %s: %q, want not captured (nothing answers behind the dummy interface)", tc.addr, got)
		}
	}
	// Not redirected (loopback): the listener's own address, marked so.
	if got, err := dial(ln.Addr().String()); err != nil || !strings.HasPrefix(got, "error "+origdst.ErrNotRedirected.Error()) {
		t.Errorf("dial the listener itself: %q, %v; want %v", got, err, origdst.ErrNotRedirected)
	}
	if err := capture.Remove(cfg); err != nil {
		t.Fatal(err)
	}
	if _, err := dial("10.9.0.7:80"); err == nil {
		t.Error("dial after remove: captured still")
	}
}
