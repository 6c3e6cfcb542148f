package main

import (
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/mesh"
)

// defaultSidecarAdminAddress is where a sidecar serves /ready, /config_dump
// and /stats unless --admin says otherwise.
const defaultSidecarAdminAddress = "127.0.0.1:15101"

func newSidecarCmd(g *globalFlags) *cobra.Command {
	opts := mesh.Options{}
	var rf proxyRoleFlags
	var captureOn bool
	var cf captureFlags
	var envoy envoyAgentFlags
	cmd := &cobra.Command{
		Use:   "sidecar",
		Short: "Run a sidecar proxy beside one service instance, configured over xDS",
		Long: `Run the mesh proxy of the service --service whose application listens on --app:
inbound traffic for the service arrives on --inbound and goes to the app; the
app calls other services through --outbound. Configuration comes from the
control plane(s) over xDS (ADS). The sidecar's identity
spiffe://<trust-domain>/ns/<namespace>/svc/<service> comes from the control
plane's CA with a join token; it authenticates the xDS connection and mesh mTLS.
Admin endpoints: /ready, /app_health, /config_dump, /stats.

With --consul the sidecar registers its inbound address in the Consul agent
with two checks the agent runs against the admin address: /ready (the proxy
has its configuration) and /app_health, the health of the app as the sidecar
itself probes it every --app-health-interval: a TCP connect to --app, or an
HTTP GET of --app-health-path (2xx and 3xx are healthy), each bounded by
--app-health-timeout. A dead app makes the instance critical, so callers stop
sending to it within about one probe interval plus one check interval, and it
returns when the app does. Without --consul there is no probe.

On SIGTERM or SIGINT the sidecar stops gracefully: it leaves Consul and fails
/ready, keeps serving for --drain-delay, closes its listeners and lets
in-flight requests finish within --drain-timeout; a second signal stops it at
once (docs/operations.md).

With --dns-listen the sidecar also answers DNS: the names of the mesh services
it may call resolve to their virtual IPs (short TTL, from its current clusters);
every other name is forwarded to --dns-upstream or the host's resolvers
(docs/transparent.md). With --capture too, the app's DNS (UDP and TCP port 53,
to any address) is redirected to that resolver, unless --capture-dns-port says
otherwise: the app calls http://orders/ unchanged.

Create the join token on the control plane:
  meshgate token create --service <service> [--namespace <namespace>]` + envoyAgentHelp,
		Example: `  meshgate sidecar --service orders --app 127.0.0.1:8080 --xds 127.0.0.1:15010 --token-file /etc/meshgate/orders.token`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			role, err := rf.options(g.logger())
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			opts.RoleOptions = role
			if envoy.enabled {
				return runEnvoyAgent(cmd.Context(), role.RoleLogger(), role, opts.Namespace, opts.Service, envoy.socket)
			}
			if opts.RegisterApp && opts.Consul.Client == nil {
				return &exitError{code: 2, err: errors.New("--register-app needs --consul")}
			}
			if opts.Consul.Client == nil {
				for _, name := range []string{"app-health-path", "app-health-interval", "app-health-timeout"} {
					if cmd.Flags().Changed(name) {
						return &exitError{code: 2, err: fmt.Errorf("--%s needs --consul: the sidecar probes its app for its Consul registration", name)}
					}
				}
			}
			if opts.AppHealthInterval <= 0 || opts.AppHealthTimeout <= 0 {
				return &exitError{code: 2, err: errors.New("--app-health-interval and --app-health-timeout must be positive")}
			}
			if !captureOn && !cmd.Flags().Changed("capture-outbound") {
				// No capture listener; with --capture-outbound alone, one
				// behind rules installed by "meshgate capture install".
				opts.CaptureAddress, opts.CaptureUnknown = "", ""
			}
			sidecar, err := mesh.New(opts)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			if captureOn {
				remove, err := installSidecarCapture(opts, &cf)
				if err != nil {
					return err
				}
				defer remove()
			}
			return runProxy(cmd.Context(), opts.Logger, sidecar.Proxy().StopNow, sidecar.Run)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Service, "service", "", "name of the service this sidecar fronts (required)")
	f.StringVar(&opts.Namespace, "namespace", mesh.DefaultNamespace, "namespace of the service")
	f.StringVar(&opts.AppAddress, "app", "", "ip:port of the local application (required)")
	f.StringVar(&opts.InboundAddress, "inbound", mesh.DefaultInboundAddress, "ip:port of the inbound listener")
	f.StringVar(&opts.OutboundAddress, "outbound", mesh.DefaultOutboundAddress, "ip:port of the outbound listener")
	f.StringArrayVar(&opts.OutboundTCP, "outbound-tcp", nil, "an outbound TCP listener, service[.namespace]:port=ip:port: the app reaches that TCP service port at ip:port (repeatable)")
	rf.register(f, proxyRoleUsage{
		admin:  defaultSidecarAdminAddress,
		id:     "node id (default sidecar~<service>~<hostname>-<pid>)",
		consul: "register this sidecar (its inbound address, checked by the admin /ready and /app_health) in the Consul agent at this address",
	})
	f.BoolVar(&opts.RegisterApp, "register-app", false, "also register the application itself in Consul, marked app-only (meshgate routes to the sidecar, not to it)")
	f.StringVar(&opts.AppHealthPath, "app-health-path", "", "with --consul: HTTP path of the app's health (e.g. /healthz) the sidecar GETs; 2xx and 3xx are healthy. Empty: a TCP connect to --app")
	f.DurationVar(&opts.AppHealthInterval, "app-health-interval", mesh.DefaultAppHealthInterval, "with --consul: how often the sidecar probes its app (from the end of one probe to the next)")
	f.DurationVar(&opts.AppHealthTimeout, "app-health-timeout", mesh.DefaultAppHealthTimeout, "with --consul: bound of one probe of the app; no connection or answer within it is unhealthy")
	f.BoolVar(&captureOn, "capture", false, "transparent mode: install nftables rules in this network namespace (needs CAP_NET_ADMIN) redirecting the app's outbound TCP to --capture-outbound and inbound TCP for --app's port to --inbound; removed at a clean stop (docs/transparent.md)")
	f.StringVar(&opts.CaptureAddress, "capture-outbound", mesh.DefaultCaptureAddress, "with --capture: ip:port of the capture listener, which routes the app's redirected connections by their original destination; given without --capture, the listener is served behind rules installed by \"meshgate capture install\" (no privilege needed)")
	f.StringVar(&opts.CaptureUnknown, "capture-unknown", "passthrough", "with --capture: a captured connection to no mesh service is proxied to its original destination (passthrough) or closed (deny)")
	cf.register(f, "capture-")
	f.StringVar(&opts.DNSListen, "dns-listen", "", "ip:port (e.g. 127.0.0.1:15053) to answer the app's DNS on, UDP and TCP: mesh service names (orders, orders.default, orders.default.svc.<domain>) get their virtual IPs, other names go to --dns-upstream. Empty: no resolver")
	f.StringArrayVar(&opts.DNSUpstreams, "dns-upstream", nil, "with --dns-listen: a resolver (IP or ip:port) other names are forwarded to (repeatable, at most 3; default: the nameservers of /etc/resolv.conf)")
	f.BoolVar(&envoy.enabled, "envoy", false, "run no proxy: serve this service's identity to a local Envoy over SDS on --sds-socket")
	f.StringVar(&envoy.socket, "sds-socket", "", "with --envoy: the Unix socket of the SDS server (the Envoy bootstrap's sds-grpc cluster)")
	return cmd
}
