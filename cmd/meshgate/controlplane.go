package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/api/consulreg"
	"github.com/meshgate/meshgate/api/servicemeta"
	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/controlplane/acme"
	"github.com/meshgate/meshgate/controlplane/discovery"
	"github.com/meshgate/meshgate/controlplane/kvpolicy"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/controlplane/state"
)

func newControlplaneCmd(g *globalFlags) *cobra.Command {
	opts := controlplane.Options{}
	var consul consulDiscoveryFlags
	var store controlplaneStoreFlags
	var addressing struct{ vipRange, dnsDomain string }
	cmd := &cobra.Command{
		Use:   "controlplane",
		Short: "Serve policy files to gateways and sidecars over xDS",
		Long: `Run the control plane: load the policy files, serve them over xDS (ADS) to
gateway and sidecar proxies, reload on every change (an invalid change is
rejected and the previous configuration kept), and answer the admin API
(/healthz, /status, /config_dump?node=ID, /tokens, /ca).

Nothing is pushed to the proxies until every source has synced once: the
policy read and valid, and with --consul the catalog's first snapshot (the
proxies keep what they have; meshgate status says what is awaited). A
destructive policy change (a file that becomes empty, no document left, a
Gateway that loses every route) is applied only once the policy has stayed
unchanged for --destructive-hold, and a push that would remove every route or
endpoint a proxy has without a policy change is held for that proxy
(meshgate proxies).

xDS and the certificate authority are served over TLS on --xds-address. The
CA root is generated on first start into --data-dir (or given with --ca-cert
and --ca-key); the admin API token is written to <data-dir>/admin-token.

With --consul the services of the Consul catalog (healthy instances only)
join the policy: see docs/consul.md.

Every service gets a virtual IP from --service-vip-cidr, the same on every
replica and after a restart, and the DNS names name, name.namespace and
name.namespace.svc.<--dns-domain>; both are sent to the sidecars in the
service's clusters (docs/transparent.md).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch store.store {
			case policyStoreFile:
				if len(opts.ConfigPaths) == 0 && consul.address == "" {
					return &exitError{code: 2, err: errors.New("--config is required (or --consul, for services only, or --store consul)")}
				}
			case policyStoreConsul:
				if len(opts.ConfigPaths) > 0 {
					return &exitError{code: 2, err: errors.New("--config and --store consul exclude each other: with --store consul the policy lives in Consul KV (meshgate apply --store consul)")}
				}
				if consul.address == "" {
					return &exitError{code: 2, err: errors.New("--store consul needs --consul (or $CONSUL_HTTP_ADDR)")}
				}
				if store.stateKeyFile == "" {
					return &exitError{code: 2, err: errors.New("--store consul needs --state-key-file: the key that encrypts the CA and tokens in Consul KV (32 random bytes, hex or base64; e.g. head -c32 /dev/urandom | base64)")}
				}
			default:
				return &exitError{code: 2, err: fmt.Errorf("unknown --store %q (want file or consul)", store.store)}
			}
			opts.Logger = g.logger()
			vipRange, err := model.ParseServiceVIPRange(addressing.vipRange)
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--service-vip-cidr: %w", err)}
			}
			if err := model.CheckDNSDomain(addressing.dnsDomain); err != nil {
				return &exitError{code: 2, err: fmt.Errorf("--dns-domain: %w", err)}
			}
			opts.ServiceAddressing = model.ServiceAddressing{VIPRange: vipRange, DNSDomain: addressing.dnsDomain}
			if consul.address != "" {
				client, err := consulreg.NewClient(consul.address, consul.token)
				if err != nil {
					return &exitError{code: 2, err: fmt.Errorf("--consul: %w", err)}
				}
				if store.store == policyStoreConsul {
					key, err := state.LoadKeyFile(store.stateKeyFile)
					if err != nil {
						return &exitError{code: 2, err: fmt.Errorf("--state-key-file: %w", err)}
					}
					prefix := strings.TrimSuffix(store.prefix, "/") + "/"
					st, err := state.NewConsul(client, prefix+"state/", key)
					if err != nil {
						return &exitError{code: 2, err: fmt.Errorf("consul state store: %w", err)}
					}
					opts.Store = st
					opts.PolicySource = kvpolicy.New(client, prefix).Source()
				}
				disc, err := discovery.NewConsul(discovery.ConsulOptions{
					Client: client, IncludeWarning: consul.includeWarning,
					Logger: opts.Logger.With("component", "consul-discovery"),
				})
				if err != nil {
					return &exitError{code: 2, err: err}
				}
				opts.Discovery = disc
			}
			return controlplane.Run(cmd.Context(), opts)
		},
	}
	f := cmd.Flags()
	f.StringArrayVar(&opts.ConfigPaths, "config", nil, "policy file or directory (repeatable, required)")
	f.StringVar(&opts.XDSAddress, "xds-address", controlplane.DefaultXDSAddress, "address to serve xDS (gRPC) on")
	f.StringVar(&opts.AdminAddress, "admin-address", controlplane.DefaultAdminAddress, "address to serve the admin HTTP API on")
	f.StringVar(&opts.DataDir, "data-dir", controlplane.DefaultDataDir(), "directory of the control plane's state: CA roots, join tokens, admin token")
	f.StringVar(&opts.CACertFile, "ca-cert", "", "PEM signing CA certificate (instead of a generated root); more certificates after the first are trusted too")
	f.StringVar(&opts.CAKeyFile, "ca-key", "", "PEM private key of --ca-cert")
	f.DurationVar(&opts.Debounce, "debounce", controlplane.DefaultDebounce, "quiet time after a file change before reloading")
	f.DurationVar(&opts.ACMERenewCheckInterval, "acme-renew-check-interval", acme.DefaultRenewCheckInterval, "how often the certificates obtained over ACME are checked for renewal (and read again from the state, where another replica may have renewed them)")
	f.DurationVar(&opts.DestructiveHold, "destructive-hold", controlplane.DefaultDestructiveHold, "how long a destructive policy change (a file emptied, no document left, a Gateway losing every route) must stay unchanged before it is applied; negative: apply at once")
	f.StringVar(&consul.address, "consul", os.Getenv("CONSUL_HTTP_ADDR"), "Consul agent (host:port or URL) whose catalog supplies services (default $CONSUL_HTTP_ADDR)")
	f.StringVar(&consul.token, "consul-token", "", "Consul ACL token with service:read and node:read (default $CONSUL_HTTP_TOKEN)")
	f.BoolVar(&consul.includeWarning, "consul-include-warning", false, "also route to Consul instances whose checks are warning (default: passing only)")
	f.StringVar(&store.store, "store", policyStoreFile, "where policy and state live: file (--config files, --data-dir) or consul (Consul KV under --prefix; for several replicas)")
	f.StringVar(&store.prefix, "prefix", kvpolicy.DefaultPrefix, "Consul KV prefix with --store consul: policy under <prefix>policy/, CA and tokens (encrypted) under <prefix>state/")
	f.StringVar(&addressing.vipRange, "service-vip-cidr", model.DefaultServiceVIPRange.String(), "IPv4 range (at least a /24) of the services' virtual IPs: each service gets a stable address in it, carried to the sidecars (docs/transparent.md)")
	f.StringVar(&addressing.dnsDomain, "dns-domain", servicemeta.DefaultDNSDomain, "DNS domain of the services' names: a service answers to name, name.namespace and name.namespace.svc.<domain>")
	f.StringVar(&store.stateKeyFile, "state-key-file", "", "with --store consul: file holding the 32-byte key (hex or base64) that encrypts the control plane's state in Consul KV; the same on every replica")
	return cmd
}

// controlplaneStoreFlags select where the control plane keeps policy and state.
type controlplaneStoreFlags struct {
	store        string
	prefix       string
	stateKeyFile string
}

// consulDiscoveryFlags are the control plane's Consul catalog flags.
type consulDiscoveryFlags struct {
	address        string
	token          string
	includeWarning bool
}
