package main

import (
	"cmp"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"os"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshgate/meshgate/mesh"
	"github.com/meshgate/meshgate/mesh/capture"
)

// captureFlags are the flags of what capture rules exclude and include,
// shared by meshgate capture and meshgate sidecar --capture.
type captureFlags struct {
	table                      string
	excludeUIDs, excludeGIDs   []uint
	excludeMark                uint32
	includeCIDRs, excludeCIDRs []string
	includePorts, excludePorts []uint
	dnsPort                    uint16
	prefix                     string // of the flags' names ("capture-" on the sidecar)
}

func (f *captureFlags) register(fs *pflag.FlagSet, prefix string) {
	f.prefix = prefix
	fs.StringVar(&f.table, prefix+"table", capture.DefaultTable, "name of meshgate's nftables table (family inet)")
	fs.UintSliceVar(&f.excludeUIDs, prefix+"exclude-uid", nil, "socket owner uid whose outbound traffic is not captured (the sidecar's; repeatable)")
	fs.UintSliceVar(&f.excludeGIDs, prefix+"exclude-gid", nil, "socket owner gid whose outbound traffic is not captured (repeatable)")
	fs.Uint32Var(&f.excludeMark, prefix+"exclude-mark", 0, "packet mark whose outbound traffic is not captured (0: none)")
	fs.StringSliceVar(&f.includeCIDRs, prefix+"include-cidr", nil, "capture outbound TCP to these CIDRs only (default: every destination)")
	fs.StringSliceVar(&f.excludeCIDRs, prefix+"exclude-cidr", nil, "never capture outbound TCP to these CIDRs")
	fs.UintSliceVar(&f.includePorts, prefix+"include-port", nil, "capture outbound TCP to these destination ports only (default: every port)")
	fs.UintSliceVar(&f.excludePorts, prefix+"exclude-port", nil, "never capture outbound TCP to these destination ports")
	fs.Uint16Var(&f.dnsPort, prefix+"dns-port", 0, "redirect the app's DNS (UDP and TCP port 53) to this local port (0: no DNS capture; on the sidecar, the port of --dns-listen when on loopback)")
}

// config is the capture.Config of the flags, with the ports of the
// listeners.
func (f *captureFlags) config(outboundPort, inboundPort uint16, appPorts []uint16) (capture.Config, error) {
	c := capture.Config{
		Table: f.table, OutboundPort: outboundPort, InboundPort: inboundPort, InboundPorts: appPorts,
		DNSPort: f.dnsPort, ExcludeMark: f.excludeMark,
	}
	for _, u := range f.excludeUIDs {
		c.ExcludeUIDs = append(c.ExcludeUIDs, uint32(u))
	}
	for _, g := range f.excludeGIDs {
		c.ExcludeGIDs = append(c.ExcludeGIDs, uint32(g))
	}
	for _, l := range []struct {
		flag string
		in   []string
		out  *[]netip.Prefix
	}{{"include-cidr", f.includeCIDRs, &c.IncludeCIDRs}, {"exclude-cidr", f.excludeCIDRs, &c.ExcludeCIDRs}} {
		for _, s := range l.in {
			p, err := netip.ParsePrefix(s)
			if err != nil {
				if a, aerr := netip.ParseAddr(s); aerr == nil {
					p = netip.PrefixFrom(a, a.BitLen())
				} else {
					return c, fmt.Errorf("--%s%s %q: %w", f.prefix, l.flag, s, err)
				}
			}
			*l.out = append(*l.out, p)
		}
	}
	for _, l := range []struct {
		flag string
		in   []uint
		out  *[]uint16
	}{{"include-port", f.includePorts, &c.IncludePorts}, {"exclude-port", f.excludePorts, &c.ExcludePorts}} {
		for _, p := range l.in {
			if p == 0 || p > 65535 {
				return c, fmt.Errorf("--%s%s %d: not a port", f.prefix, l.flag, p)
			}
			*l.out = append(*l.out, uint16(p))
		}
	}
	return c, c.Check()
}

func newCaptureCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "capture",
		Short: "Install, remove or show the nftables rules of a transparent sidecar",
		Long: `Manage the nftables rules that make a sidecar transparent, in the current
network namespace (run as root, or with CAP_NET_ADMIN, in the application's
namespace): the application's outbound TCP goes to the sidecar's capture
listener, inbound TCP for the application's ports to its inbound listener,
optionally DNS to its resolver. Every rule is in meshgate's own table
(inet meshgate): remove deletes that table alone, restoring the namespace.
"meshgate sidecar --capture" does the same at start and stop (docs/transparent.md).`,
	}
	var f captureFlags
	var outboundPort, inboundPort uint16
	var appPorts []uint
	install := &cobra.Command{
		Use:     "install",
		Short:   "Install (or replace) the capture rules",
		Example: `  meshgate capture install --outbound-port 15002 --inbound-port 15006 --app-port 8080 --exclude-uid 1337`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var ports []uint16
			for _, p := range appPorts {
				if p == 0 || p > 65535 {
					return &exitError{code: 2, err: fmt.Errorf("--app-port %d: not a port", p)}
				}
				ports = append(ports, uint16(p))
			}
			c, err := f.config(outboundPort, inboundPort, ports)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if outboundPort != 0 && len(c.ExcludeUIDs) == 0 && len(c.ExcludeGIDs) == 0 && c.ExcludeMark == 0 {
				return &exitError{code: 2, err: fmt.Errorf("outbound capture needs --exclude-uid, --exclude-gid or --exclude-mark for the sidecar's own traffic")}
			}
			if err := capture.Install(c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "capture rules installed in table inet %s\n", c.Table)
			return nil
		},
	}
	fs := install.Flags()
	f.register(fs, "")
	fs.Uint16Var(&outboundPort, "outbound-port", capture.DefaultOutboundPort, "local port of the sidecar's capture listener outbound TCP is redirected to (0: no outbound capture)")
	fs.Uint16Var(&inboundPort, "inbound-port", 0, "port of the sidecar's inbound listener inbound TCP to --app-port is redirected to (0: no inbound capture)")
	fs.UintSliceVar(&appPorts, "app-port", nil, "application port whose inbound TCP is redirected to --inbound-port (repeatable)")
	var table string
	remove := &cobra.Command{
		Use:   "remove",
		Short: "Remove the capture rules (meshgate's table, nothing else)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := capture.Remove(capture.Config{Table: table}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "capture rules removed (table inet %s)\n", table)
			return nil
		},
	}
	remove.Flags().StringVar(&table, "table", capture.DefaultTable, "name of meshgate's nftables table (family inet)")
	status := &cobra.Command{
		Use:   "status",
		Short: "Show whether the capture rules are installed",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			st, err := capture.Inspect(capture.Config{Table: table})
			if err != nil {
				return err
			}
			if !st.Installed {
				return &exitError{code: 3, err: fmt.Errorf("capture rules not installed (no table inet %s)", table)}
			}
			var parts []string
			for _, ch := range slices.Sorted(maps.Keys(st.Rules)) {
				parts = append(parts, fmt.Sprintf("%s: %d rules", ch, st.Rules[ch]))
			}
			fmt.Fprintf(cmd.OutOrStdout(), "installed: table inet %s (%s)\n", table, strings.Join(parts, ", "))
			return nil
		},
	}
	status.Flags().StringVar(&table, "table", capture.DefaultTable, "name of meshgate's nftables table (family inet)")
	cmd.AddCommand(install, remove, status)
	return cmd
}

// installSidecarCapture installs the capture rules of a sidecar with opts:
// outbound TCP to its capture listener (its own uid excluded unless the
// flags exclude others), inbound TCP for its app's port to its inbound
// listener when that one is not on loopback (a redirect from outside
// cannot reach a loopback listener), and the app's DNS to the sidecar's
// resolver when it has one on loopback. It returns the removal to run at a
// clean stop.
func installSidecarCapture(opts mesh.Options, f *captureFlags) (func(), error) {
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	outbound, err := netip.ParseAddrPort(opts.CaptureAddress)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--capture-outbound %q: %w", opts.CaptureAddress, err)}
	}
	if !outbound.Addr().IsLoopback() && !outbound.Addr().IsUnspecified() {
		return nil, &exitError{code: 2, err: fmt.Errorf("--capture-outbound %s: the redirect reaches a loopback or wildcard address only", outbound)}
	}
	var inboundPort uint16
	var appPorts []uint16
	inbound, err := netip.ParseAddrPort(cmp.Or(opts.InboundAddress, mesh.DefaultInboundAddress))
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--inbound: %w", err)}
	}
	app, err := netip.ParseAddrPort(opts.AppAddress)
	if err != nil {
		return nil, &exitError{code: 2, err: fmt.Errorf("--app: %w", err)}
	}
	if inbound.Addr().IsLoopback() {
		logger.Warn("capture: inbound listener on loopback: inbound traffic is not captured", "inbound", inbound.String())
	} else {
		inboundPort, appPorts = inbound.Port(), []uint16{app.Port()}
	}
	if f.dnsPort == 0 && opts.DNSListen != "" {
		// The sidecar's resolver: the app's DNS goes there.
		dns, err := netip.ParseAddrPort(opts.DNSListen)
		if err != nil {
			return nil, &exitError{code: 2, err: fmt.Errorf("--dns-listen: %w", err)}
		}
		if dns.Addr().IsLoopback() || dns.Addr().IsUnspecified() {
			f.dnsPort = dns.Port()
		} else {
			logger.Warn("capture: the DNS resolver is not on loopback: the app's DNS is not redirected to it", "dns_listen", dns.String())
		}
	}
	if len(f.excludeUIDs) == 0 && len(f.excludeGIDs) == 0 && f.excludeMark == 0 {
		f.excludeUIDs = []uint{uint(os.Getuid())}
	}
	c, err := f.config(outbound.Port(), inboundPort, appPorts)
	if err != nil {
		return nil, &exitError{code: 2, err: err}
	}
	if err := capture.Install(c); err != nil {
		return nil, err
	}
	logger.Info("capture rules installed", "table", "inet "+c.Table, "outbound_port", c.OutboundPort,
		"inbound_port", c.InboundPort, "app_ports", appPorts, "dns_port", c.DNSPort, "exclude_uids", c.ExcludeUIDs)
	return func() {
		if err := capture.Remove(c); err != nil {
			logger.Error("capture rules not removed", "table", "inet "+c.Table, "error", err)
			return
		}
		logger.Info("capture rules removed", "table", "inet "+c.Table)
	}, nil
}
