package main

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/meshgate/meshgate/api/consulreg"
	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
	"github.com/meshgate/meshgate/gateway"
)

// defaultGatewayAdminAddress is where a gateway node serves /ready,
// /config_dump and /stats unless --admin says otherwise.
const defaultGatewayAdminAddress = "127.0.0.1:15100"

// tokenEnv is the environment variable that may hold a proxy's join token.
const tokenEnv = "MESHGATE_TOKEN"

func newGatewayCmd(g *globalFlags) *cobra.Command {
	opts := gateway.Options{}
	var rf proxyRoleFlags
	var reusePort bool
	cmd := &cobra.Command{
		Use:   "gateway",
		Short: "Run a gateway node: the proxy of one Gateway, configured over xDS",
		Long: `Run a gateway node for the Gateway --name: obtain its identity
spiffe://<trust-domain>/ns/<namespace>/svc/<name> from the control plane's CA
with a join token, connect to the control plane(s) over xDS (ADS) with it, open
the listeners of that Gateway and route external clients to services.
Admin endpoints: /ready, /config_dump, /stats.

On SIGTERM or SIGINT the gateway stops gracefully: it leaves Consul and fails
/ready, keeps serving for --drain-delay, closes its listeners and lets
in-flight requests finish within --drain-timeout; a second signal stops it at
once (docs/operations.md).

Create the join token on the control plane:
  meshgate token create --service <name> [--namespace <namespace>]`,
		Example: `  meshgate gateway --name edge --xds 127.0.0.1:15010 --token-file /etc/meshgate/edge.token
  MESHGATE_TOKEN=mgt1.… meshgate gateway --name edge --xds 127.0.0.1:15010`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			role, err := rf.options(g.logger())
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			role.Serving.ReusePort = reusePort
			opts.RoleOptions = role
			gw, err := gateway.New(opts)
			if err != nil {
				return &exitError{code: 2, err: err}
			}
			return runProxy(cmd.Context(), opts.Logger, gw.Proxy().StopNow, gw.Run)
		},
	}
	f := cmd.Flags()
	f.StringVar(&opts.Name, "name", "", "name of the Gateway this node serves (required)")
	f.StringVar(&opts.Namespace, "namespace", gateway.DefaultNamespace, "namespace of the Gateway")
	f.BoolVar(&reusePort, "reuse-port", false, "bind the Gateway's listeners with SO_REUSEPORT (Linux): several replicas of one Gateway on one host "+
		"(each with its own --id and --admin) then serve its ports together, the kernel spreading new connections among them")
	rf.register(f, proxyRoleUsage{
		admin:  defaultGatewayAdminAddress,
		id:     "node id (default gateway~<name>~<hostname>-<pid>)",
		consul: "register this gateway node in the Consul agent at this address (service " + consulreg.GatewayService + ")",
	})
	return cmd
}

// proxyRoleFlags are the flags `meshgate gateway` and `meshgate sidecar`
// share: the control plane, the admin address and node id, the identity,
// the Consul registration, the HTTP server, memory, connection limit and
// graceful stop. options returns the dataplane.RoleOptions they give.
type proxyRoleFlags struct {
	xds       []string
	admin     string
	id        string
	zone      string
	identity  proxyIdentityFlags
	consul    proxyConsulFlags
	memory    proxyMemoryFlags
	server    proxyServerFlags
	lifecycle proxyLifecycleFlags
}

// proxyRoleUsage is what differs between the commands in the shared flags:
// the default admin address and the help of --id and --consul.
type proxyRoleUsage struct {
	admin, id, consul string
}

func (p *proxyRoleFlags) register(f *pflag.FlagSet, u proxyRoleUsage) {
	f.StringSliceVar(&p.xds, "xds", nil, "control-plane xDS address host:port; several comma-separated or repeated (required)")
	f.StringVar(&p.admin, "admin", u.admin, "address of the admin HTTP endpoints")
	f.StringVar(&p.id, "id", "", u.id)
	f.StringVar(&p.zone, "zone", "", "zone of this proxy (node.locality.zone): a TrafficPolicy with loadBalancer.locality.preferLocal sends its requests to the endpoints of this zone first")
	p.identity.register(f)
	p.memory.register(f)
	p.server.register(f)
	p.lifecycle.register(f)
	p.consul.register(f, u.consul)
}

// options checks the flags, sets the Go runtime's memory limit
// (--memory-limit) and returns the role options, with logger.
func (p *proxyRoleFlags) options(logger *slog.Logger) (dataplane.RoleOptions, error) {
	id, err := p.identity.options()
	if err != nil {
		return dataplane.RoleOptions{}, err
	}
	if err := p.memory.apply(); err != nil {
		return dataplane.RoleOptions{}, err
	}
	fast, err := p.server.fastHTTP1()
	if err != nil {
		return dataplane.RoleOptions{}, err
	}
	serving, err := p.lifecycle.options()
	if err != nil {
		return dataplane.RoleOptions{}, err
	}
	serving.FastHTTP1 = fast
	consul, err := p.consul.options()
	if err != nil {
		return dataplane.RoleOptions{}, err
	}
	return dataplane.RoleOptions{
		XDSAddresses: p.xds,
		AdminAddress: p.admin,
		ID:           p.id,
		Zone:         p.zone,
		Logger:       logger,
		Identity:     id,
		Consul:       consul,
		Serving:      serving,
	}, nil
}

// proxyIdentityFlags are the identity flags of the gateway and sidecar
// commands.
type proxyIdentityFlags struct {
	token       string
	tokenFile   string
	caFile      string
	trustDomain string
	insecure    bool
}

func (p *proxyIdentityFlags) register(f *pflag.FlagSet) {
	f.StringVar(&p.token, "token", "", "join token (visible to other local users: prefer --token-file or $"+tokenEnv+")")
	f.StringVar(&p.tokenFile, "token-file", "", "file holding the join token")
	f.StringVar(&p.caFile, "ca-file", "", "PEM bundle of roots to verify the control plane with, instead of the token's pin")
	f.StringVar(&p.trustDomain, "trust-domain", spiffeid.DefaultTrustDomain, "trust domain of the mesh (MeshConfig spec.trustDomain)")
	f.BoolVar(&p.insecure, "insecure", false, "no identity, plaintext xDS: only for a control plane without TLS, in tests")
}

// options resolves the join token (--token, else --token-file, else
// $MESHGATE_TOKEN) and returns the identity options.
func (p *proxyIdentityFlags) options() (identity.ProxyOptions, error) {
	if p.token != "" && p.tokenFile != "" {
		return identity.ProxyOptions{}, errors.New("give the join token with --token or --token-file, not both")
	}
	tok := p.token
	if p.tokenFile != "" {
		data, err := os.ReadFile(p.tokenFile)
		if err != nil {
			return identity.ProxyOptions{}, fmt.Errorf("--token-file: %w", err)
		}
		tok = strings.TrimSpace(string(data))
		if tok == "" {
			return identity.ProxyOptions{}, fmt.Errorf("--token-file %s is empty", p.tokenFile)
		}
	}
	if tok == "" && !p.insecure {
		tok = strings.TrimSpace(os.Getenv(tokenEnv))
	}
	return identity.ProxyOptions{Token: tok, CAFile: p.caFile, TrustDomain: p.trustDomain, Insecure: p.insecure}, nil
}

// proxyConsulFlags are the Consul registration flags of the gateway and
// sidecar commands.
type proxyConsulFlags struct {
	address       string
	token         string
	labels        []string
	checkInterval time.Duration
}

func (c *proxyConsulFlags) register(f *pflag.FlagSet, consulUsage string) {
	f.StringVar(&c.address, "consul", "", consulUsage)
	f.StringVar(&c.token, "consul-token", "", "Consul ACL token with service:write (default $CONSUL_HTTP_TOKEN)")
	f.StringArrayVar(&c.labels, "label", nil, "label key=value of this instance, registered as a Consul tag (repeatable)")
	f.DurationVar(&c.checkInterval, "consul-check-interval", consulreg.DefaultCheckInterval, "interval of the Consul health checks of the admin address (/ready; a sidecar's /app_health too)")
}

// options builds the Consul client (none without --consul) and the labels.
func (c *proxyConsulFlags) options() (consulreg.ProxyOptions, error) {
	parsed, err := parseLabels(c.labels)
	if err != nil {
		return consulreg.ProxyOptions{}, err
	}
	if c.address == "" {
		if len(parsed) > 0 {
			return consulreg.ProxyOptions{}, errors.New("--label needs --consul: labels are registered in Consul")
		}
		return consulreg.ProxyOptions{}, nil
	}
	cl, err := consulreg.NewClient(c.address, c.token)
	if err != nil {
		return consulreg.ProxyOptions{}, fmt.Errorf("--consul: %w", err)
	}
	return consulreg.ProxyOptions{Client: cl, Labels: parsed, CheckInterval: c.checkInterval}, nil
}

// parseLabels parses key=value flags.
func parseLabels(flags []string) (map[string]string, error) {
	if len(flags) == 0 {
		return nil, nil
	}
	out := make(map[string]string, len(flags))
	for _, l := range flags {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("--label %q: want key=value", l)
		}
		out[k] = v
	}
	return out, nil
}

// http1ServerEnv, when set, is the default of --http1-server.
const http1ServerEnv = "MESHGATE_HTTP1_SERVER"

// proxyServerFlags choose the HTTP server of the gateway's and sidecar's
// listeners.
type proxyServerFlags struct {
	http1 string
}

func (p *proxyServerFlags) register(f *pflag.FlagSet) {
	f.StringVar(&p.http1, "http1-server", defaultHTTP1Server(), "HTTP/1.1 server of the listeners: fast (body-less HTTP/1.x requests "+
		"on meshgate's fast path, everything else on net/http; see docs/performance.md) or std (net/http only, with the same HTTP/1.1 framing checks: docs/xds.md). Default: $"+http1ServerEnv+", else fast")
}

// defaultHTTP1Server is the default of --http1-server, also used by
// `meshgate dev`: $MESHGATE_HTTP1_SERVER, else fast.
func defaultHTTP1Server() string {
	if v := strings.TrimSpace(os.Getenv(http1ServerEnv)); v != "" {
		return v
	}
	return "fast"
}

// fastHTTP1 is --http1-server: whether the fast HTTP/1.1 path serves.
func (p *proxyServerFlags) fastHTTP1() (bool, error) {
	switch p.http1 {
	case "std":
		return false, nil
	case "fast":
		return true, nil
	}
	return false, fmt.Errorf("--http1-server (or $%s) %q: want std or fast", http1ServerEnv, p.http1)
}

// proxyMemoryFlags are the Go runtime memory flags of the gateway and sidecar
// commands.
type proxyMemoryFlags struct {
	limit string
}

func (m *proxyMemoryFlags) register(f *pflag.FlagSet) {
	f.StringVar(&m.limit, "memory-limit", "", "soft memory limit of the proxy's Go runtime (e.g. 48MiB): the garbage collector works harder "+
		"as the heap nears it; it counts heap, stacks and runtime metadata, not the mapped binary. Empty: $GOMEMLIMIT, else no limit. "+
		"Set it a few MiB under the container's memory limit (see docs/performance.md)")
}

// apply sets the runtime's memory limit when --memory-limit is given.
func (m *proxyMemoryFlags) apply() error {
	if m.limit == "" {
		return nil
	}
	limit, err := parseByteSize(m.limit)
	if err != nil {
		return fmt.Errorf("--memory-limit: %w", err)
	}
	if limit == 0 {
		limit = math.MaxInt64 // 0: explicitly no limit, even with $GOMEMLIMIT
	}
	debug.SetMemoryLimit(limit)
	return nil
}

// byteUnits are the suffixes parseByteSize accepts, GOMEMLIMIT's syntax.
var byteUnits = []struct {
	suffix string
	shift  uint
}{{"TiB", 40}, {"GiB", 30}, {"MiB", 20}, {"KiB", 10}, {"B", 0}}

// parseByteSize parses a byte count: digits with an optional unit B, KiB,
// MiB, GiB or TiB (the syntax of $GOMEMLIMIT).
func parseByteSize(s string) (int64, error) {
	digits, shift := strings.TrimSpace(s), uint(0)
	for _, u := range byteUnits {
		if rest, ok := strings.CutSuffix(digits, u.suffix); ok {
			digits, shift = strings.TrimSpace(rest), u.shift
			break
		}
	}
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: want a byte count such as 48MiB, 1GiB or 50000000", s)
	}
	if n > math.MaxInt64>>shift {
		return 0, fmt.Errorf("%q: too large", s)
	}
	return n << shift, nil
}
