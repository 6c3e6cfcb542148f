package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sync/errgroup"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/dataplane"
	"github.com/meshgate/meshgate/dataplane/identity"
	"github.com/meshgate/meshgate/examples"
	"github.com/meshgate/meshgate/examples/demoapp"
	"github.com/meshgate/meshgate/gateway"
	"github.com/meshgate/meshgate/mesh"
	"github.com/meshgate/meshgate/policy"
)

type devFlags struct {
	config       string
	xdsAddress   string
	adminAddress string
	tracing      devTracing
	// stateDir keeps dev's HTTPS certificate across runs.
	stateDir string
}

func newDevCmd(g *globalFlags) *cobra.Command {
	f := &devFlags{}
	cmd := &cobra.Command{
		Use:   "dev",
		Short: "Run everything in one process: control plane, gateway, sidecars and demo services",
		Long: `dev runs the quickstart in one process: a control plane watching the policy
files, a gateway node for every Gateway, and for every Service endpoint on this
machine a demo service behind its own sidecar. It is the same code as the
distributed commands, wired in one process. Edit the policy files while it runs
and watch the change take effect.

Without --config it uses ./examples/quickstart when present, else a copy of the
quickstart built into the binary.

With --jaeger (a Jaeger's OTLP/gRPC receiver) or --otlp-endpoint (any OTLP/gRPC
collector), every proxy sends its spans there, as a MeshConfig spec.tracing
would (it replaces the policy's), at --trace-sampling percent of new traces;
dev prints the Jaeger UI's URL.

A Gateway annotated meshgate.dev/dev-https-port (the quickstart's: 8443) gets an
HTTPS listener on that port too, with a self-signed certificate for localhost,
127.0.0.1 and ::1 that dev generates on its first run in --state-dir and reuses
after; dev prints a curl command that trusts it.

A SecurityPolicy annotated meshgate.dev/dev-jwt-provider: NAME (the
quickstart's jwt-demo) has its JWT provider NAME verify with an ES256 key
dev generates on its first run in --state-dir (dev-jwt.key) and reuses
after: the provider reads the public JWKS dev writes there (dev-jwks.json)
in place of the policy's. dev prints a curl command with a token it signed
(sub demo-user, a scope claim, the provider's issuer and audience, valid
24 hours).

A Service annotated meshgate.dev/dev-proxyless-target: NAME[:PORT] (the
quickstart's grpc-client, target greeter:9090) is enrolled as a proxyless
gRPC client, as 'meshgate bootstrap grpc' would: dev writes its key.pem,
cert.pem, ca.pem and the gRPC bootstrap.json to
--state-dir/proxyless/<service>, renews the certificate while it runs, and
prints how to call the target with GRPC_XDS_BOOTSTRAP and an xds:/// URI,
no sidecar on the client's side.`,
		Example: `  tools/jaeger/bin/jaeger &      # OTLP on 4317, UI on http://localhost:16686
  meshgate dev --jaeger 127.0.0.1:4317`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runDev(cmd.Context(), f, g.logger(), cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVar(&f.config, "config", "", "policy file or directory (default: the quickstart)")
	cmd.Flags().StringVar(&f.xdsAddress, "xds-address", "127.0.0.1:15010", "control plane xDS address")
	cmd.Flags().StringVar(&f.adminAddress, "admin-address", "127.0.0.1:15000", "control plane admin address")
	cmd.Flags().StringVar(&f.tracing.jaeger, "jaeger", "", "send traces to this Jaeger's OTLP/gRPC receiver (ip:port, e.g. 127.0.0.1:4317)")
	cmd.Flags().StringVar(&f.tracing.jaegerUI, "jaeger-ui", "", "the Jaeger UI URL to print (default: http://<--jaeger's host>:16686)")
	cmd.Flags().StringVar(&f.tracing.otlp, "otlp-endpoint", "", "send traces to this OTLP/gRPC collector (ip:port)")
	cmd.Flags().Float64Var(&f.tracing.sampling, "trace-sampling", 100, "percent of new traces sampled with --jaeger or --otlp-endpoint")
	cmd.Flags().StringVar(&f.stateDir, "state-dir", defaultDevStateDir(), "directory of the self-signed certificate of the dev HTTPS listener and of the JWT signing key (made on the first run, reused after), and of the proxyless gRPC clients' files (written at every start)")
	return cmd
}

// devTask is one component of the embedded deployment.
type devTask struct {
	name string
	run  func(ctx context.Context) error
}

func runDev(ctx context.Context, f *devFlags, logger *slog.Logger, out io.Writer) error {
	fastHTTP1, err := (&proxyServerFlags{http1: defaultHTTP1Server()}).fastHTTP1()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	tracing, err := f.tracing.spec()
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	dir, cleanup, err := devConfigDir(f.config)
	if err != nil {
		return err
	}
	defer cleanup()

	// As the control plane does, dev serves the resources that are
	// accepted and names the others; it stops only when nothing can be
	// served (a rejected MeshConfig).
	result := policy.EvaluatePaths(dir)
	for _, w := range result.Warnings {
		fmt.Fprintln(os.Stderr, "warning:", w)
	}
	for _, e := range result.Errors {
		fmt.Fprintln(os.Stderr, e)
	}
	set := result.Set
	if set == nil {
		return &exitError{code: 1, err: fmt.Errorf("%d errors in %s: nothing can be served", len(result.Errors), dir)}
	}
	if err := devHTTPSPorts(set); err != nil {
		return &exitError{code: 2, err: err}
	}
	var devCert *devCertificate
	if slices.ContainsFunc(set.Gateways, func(g *policy.Gateway) bool { return g.Annotations[AnnotationDevHTTPSPort] != "" }) {
		if devCert, err = ensureDevCertificate(f.stateDir, time.Now()); err != nil {
			return err
		}
		set = devHTTPS(set, devCert)
	}
	// A SecurityPolicy annotated meshgate.dev/dev-jwt-provider verifies
	// tokens dev signs, with the key it keeps in its state directory.
	var devToken *devJWT
	jwtProviders, err := devJWTProviders(set)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if len(jwtProviders) > 0 {
		if devToken, err = ensureDevJWT(f.stateDir, set, jwtProviders, time.Now()); err != nil {
			return err
		}
		set = devJWTSet(set, devToken.jwksFile)
	}
	// A Service annotated meshgate.dev/dev-proxyless-target is enrolled as
	// a proxyless gRPC client, its files in the state directory.
	proxyless, err := devProxylessClients(set, f.stateDir)
	if err != nil {
		return &exitError{code: 2, err: err}
	}
	if n := len(result.Errors); n > 0 {
		fmt.Fprintf(os.Stderr, "%d errors in %s: the resources they name are not served (meshgate status lists them)\n", n, dir)
	}

	// The control plane listens now, so that tokens can be minted for the
	// proxies below; its state (CA, tokens) lives in memory.
	var evaluate func(policy.Input) *policy.Result
	if tracing != nil {
		evaluate = withTracing(policy.NewCache().Evaluate, tracing)
	}
	if devCert != nil {
		if evaluate == nil {
			evaluate = policy.NewCache().Evaluate
		}
		evaluate = withDevHTTPS(evaluate, devCert)
	}
	if devToken != nil {
		if evaluate == nil {
			evaluate = policy.NewCache().Evaluate
		}
		evaluate = withDevJWT(evaluate, devToken.jwksFile)
	}
	cp, err := controlplane.New(ctx, controlplane.Options{
		ConfigPaths:  []string{dir},
		XDSAddress:   f.xdsAddress,
		AdminAddress: f.adminAddress,
		Dev:          true,
		Logger:       logger.With("component", "controlplane"),
		Evaluate:     evaluate,
	})
	if err != nil {
		return err
	}
	defer cp.Close()
	trustDomain := ""
	if set.MeshConfig != nil {
		trustDomain = set.MeshConfig.Spec.TrustDomain
	}
	token := func(service, namespace string) (string, error) {
		return cp.CreateToken(ctx, service, namespace, 24*time.Hour)
	}

	xds := []string{cp.XDSAddr().String()}
	tasks := []devTask{{name: "controlplane", run: cp.Run}}
	if t, ok := devRateLimitService(set, logger.With("component", "ratelimit")); ok {
		tasks = append(tasks, t)
	}
	var gatewayURLs []string
	for _, gw := range set.Gateways {
		tok, err := token(gw.Name, gw.Namespace)
		if err != nil {
			return err
		}
		tasks = append(tasks, devTask{
			name: "gateway/" + gw.Name,
			run: func(ctx context.Context) error {
				return gateway.Run(ctx, gateway.Options{
					Name: gw.Name, Namespace: gw.Namespace,
					RoleOptions: dataplane.RoleOptions{
						XDSAddresses: xds,
						Identity:     identity.ProxyOptions{Token: tok, TrustDomain: trustDomain},
						Serving:      dataplane.ServingOptions{FastHTTP1: fastHTTP1},
						Logger:       logger.With("component", "gateway", "gateway", gw.Name),
					},
				})
			},
		})
		host := "127.0.0.1"
		if len(gw.Spec.Addresses) > 0 {
			host = gw.Spec.Addresses[0].Value
		}
		for _, l := range gw.Spec.Listeners {
			scheme := "http://"
			if l.Protocol == gwapiv1.HTTPSProtocolType {
				scheme = "https://"
			}
			gatewayURLs = append(gatewayURLs, scheme+net.JoinHostPort(host, strconv.Itoa(int(l.Port))))
		}
	}
	sort.Strings(gatewayURLs)

	var sidecars []string
	// The ports picked for demo apps and outbound listeners stay bound
	// until every one is picked: a port picked free and released at once
	// can be picked again for the next address.
	var picked portPicker
	defer picked.release()
	for _, svc := range set.Services {
		for _, ep := range svc.Spec.Endpoints {
			host, _, err := net.SplitHostPort(ep.Address)
			if err != nil || !isLoopback(host) {
				continue
			}
			appAddr, err := picked.next()
			if err != nil {
				return err
			}
			outAddr, err := picked.next()
			if err != nil {
				return err
			}
			tok, err := token(svc.Name, svc.Namespace)
			if err != nil {
				return err
			}
			tasks = append(tasks,
				devTask{
					name: "app/" + svc.Name + "@" + ep.Address,
					run: func(ctx context.Context) error {
						return demoapp.Serve(ctx, demoapp.Options{
							Name: svc.Name, Version: ep.Labels["version"], Listen: appAddr, Outbound: outAddr,
							Logger: logger.With("component", "app", "service", svc.Name),
						})
					},
				},
				devTask{
					name: "sidecar/" + svc.Name + "@" + ep.Address,
					run: func(ctx context.Context) error {
						return mesh.Run(ctx, mesh.Options{
							Service: svc.Name, Namespace: svc.Namespace, AppAddress: appAddr,
							InboundAddress: ep.Address, OutboundAddress: outAddr,
							RoleOptions: dataplane.RoleOptions{
								XDSAddresses: xds,
								ID:           xdsnode.IDPrefix(xdsnode.RoleSidecar, svc.Name, svc.Namespace) + ep.Address,
								Identity:     identity.ProxyOptions{Token: tok, TrustDomain: trustDomain},
								Serving:      dataplane.ServingOptions{FastHTTP1: fastHTTP1},
								Logger:       logger.With("component", "sidecar", "service", svc.Name),
							},
						})
					},
				})
			sidecars = append(sidecars, fmt.Sprintf("  %-10s inbound %s -> app %s (outbound %s)", svc.Name, ep.Address, appAddr, outAddr))
		}
	}

	picked.release()

	for _, c := range proxyless {
		tok, err := token(c.service, c.namespace)
		if err != nil {
			return err
		}
		tasks = append(tasks, devTask{
			name: "proxyless/" + c.service,
			run: func(ctx context.Context) error {
				return c.run(ctx, logger.With("component", "proxyless", "service", c.service), xds[0], trustDomain, tok)
			},
		})
	}

	// The first task to fail stops the others; an error after the stop
	// (ctx done) is not one.
	g, ctx := errgroup.WithContext(ctx)
	for _, t := range tasks {
		g.Go(func() error {
			if err := t.run(ctx); err != nil && ctx.Err() == nil {
				return fmt.Errorf("%s: %w", t.name, err)
			}
			return nil
		})
	}

	if len(gatewayURLs) > 0 {
		if err := waitServing(ctx, gatewayURLs[0], 15*time.Second); err != nil && ctx.Err() == nil {
			logger.Warn("gateway not serving yet", "url", gatewayURLs[0], "err", err)
		}
	}
	for _, c := range proxyless {
		select {
		case <-c.written:
		case <-ctx.Done():
		case <-time.After(15 * time.Second):
			logger.Warn("proxyless client not enrolled yet", "service", c.service)
		}
	}
	if ctx.Err() == nil {
		printDevBanner(out, dir, f, gatewayURLs, sidecars)
		printDevHTTPS(out, devCert, gatewayURLs)
		printDevJWT(out, devToken, gatewayURLs)
		printDevProxyless(out, proxyless)
		fmt.Fprint(out, f.tracing.banner(tracing))
	}
	<-ctx.Done()
	err = g.Wait()
	fmt.Fprintln(out, "meshgate dev: stopped")
	return err
}

func printDevBanner(out io.Writer, dir string, f *devFlags, urls, sidecars []string) {
	gw := "http://127.0.0.1:8080"
	if len(urls) > 0 {
		gw = urls[0]
	}
	fmt.Fprintf(out, `
meshgate dev is running (Ctrl-C to stop)

  policy      %s   (edit these files: changes apply within a second)
  xDS         %s   (TLS; every proxy has a SPIFFE identity, mesh hops are mTLS)
  admin       http://%s/status
  gateway     %s
sidecars:
%s

Try:
  curl %s/                       # the frontend, through the gateway and its sidecar
  curl -i %s/orders              # 90%% orders (v1), 10%% orders-v2: a canary split
  curl -H 'x-canary: always' %s/orders      # header match: always orders-v2
  for i in $(seq 20); do curl -s %s/orders; echo; done | grep -o '"service":"[^"]*"' | sort | uniq -c
  curl %s/call/orders/items      # frontend calls orders through its sidecar (mesh)
  curl -H 'x-version: v2' %s/call/orders/items   # a mesh route sends it to orders-v2
  curl %s/call/orders/internal/x # 403: security.yaml denies /internal/* to every caller
  curl %s/status         # proxies with their identities, certificate expiry, mTLS mode

API gateway (apigateway.yaml):
  curl -i %s/api/orders          # 401: the route needs an API key
  curl -H 'X-API-Key: quickstart-key' %s/api/orders   # 200 as consumer demo (30 a minute per consumer)
  for i in $(seq 7); do curl -s -o /dev/null -w '%%{http_code}\n' %s/limited; done   # 5 a minute, then 429
  curl -si %s/cached | grep -i x-cache   # MISS, then HIT for 30s

`, dir, f.xdsAddress, f.adminAddress, gw, strings.Join(sidecars, "\n"), gw, gw, gw, gw, gw, gw, gw, f.adminAddress, gw, gw, gw, gw)
}

// devConfigDir resolves the policy directory for dev mode.
func devConfigDir(flag string) (dir string, cleanup func(), err error) {
	noop := func() {}
	if flag != "" {
		return flag, noop, nil
	}
	if st, err := os.Stat(filepath.Join("examples", "quickstart")); err == nil && st.IsDir() {
		return filepath.Join("examples", "quickstart"), noop, nil
	}
	tmp, err := os.MkdirTemp("", "meshgate-quickstart-")
	if err != nil {
		return "", noop, fmt.Errorf("extracting the quickstart: %w", err)
	}
	cleanup = func() { _ = os.RemoveAll(tmp) }
	err = fs.WalkDir(examples.Quickstart, "quickstart", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := examples.Quickstart.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(tmp, filepath.Base(path)), data, 0o644)
	})
	if err != nil {
		cleanup()
		return "", noop, fmt.Errorf("extracting the quickstart: %w", err)
	}
	return tmp, cleanup, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// portPicker picks free loopback addresses, each distinct from the others
// it picked: it keeps them bound until release. It picks below the
// kernel's ephemeral range when it can: a port in that range, free when
// picked, can be taken by any outgoing connection's local end before its
// user binds it.
type portPicker struct{ held []net.Listener }

// pickFloor is the lowest port portPicker tries.
const pickFloor = 10000

// next binds a free loopback port and returns its address.
func (p *portPicker) next() (string, error) {
	if ceiling := ephemeralLow(); ceiling > pickFloor {
		for range 64 {
			port := pickFloor + rand.IntN(ceiling-pickFloor)
			if ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port))); err == nil {
				p.held = append(p.held, ln)
				return ln.Addr().String(), nil
			}
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("finding a free port: %w", err)
	}
	p.held = append(p.held, ln)
	return ln.Addr().String(), nil
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux's
// net.ipv4.ip_local_port_range), 0 when unknown.
func ephemeralLow() int {
	data, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(data))
	if len(fields) == 0 {
		return 0
	}
	low, err := strconv.Atoi(fields[0])
	if err != nil {
		return 0
	}
	return low
}

// release unbinds the picked ports, so that their users can bind them.
func (p *portPicker) release() {
	for _, ln := range p.held {
		ln.Close()
	}
	p.held = nil
}

// waitServing polls url until anything answers over HTTP.
func waitServing(ctx context.Context, url string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	client := &http.Client{Timeout: time.Second}
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url+"/", nil)
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusNotFound && resp.StatusCode != http.StatusServiceUnavailable {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			if err == nil {
				err = ctx.Err()
			}
			return err
		case <-time.After(100 * time.Millisecond):
		}
	}
}
