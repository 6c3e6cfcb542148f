package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The deployments the e2e tests and the chaos scenarios start, and the
// policy they start them with: one place for each.
//
// Policy fixtures (YAML whose ${name} addresses cluster.expand fills in):
//
//   - edgeGateway: the Gateway edge, one HTTP listener on ${gw};
//   - staticServices(names...): Services whose endpoint is the app itself,
//     at ${name};
//   - meshServices(names...): Services whose endpoint is the inbound
//     listener of the app's sidecar, at ${name-in};
//   - certificateTTL(d): the MeshConfig setting the certificate lifetime;
//   - blueGreenServices(): edgeGateway with the static services blue and
//     green, and routeTo(backend), the gateway's one route;
//   - yamlDocs(docs...): documents joined into one file.
//
// Deployment shapes:
//
//   - startBlueGreen(t): a gateway routing to blue (routes.yaml), beside
//     green, with the policy in files;
//   - c.startInstance(sidecar, name, svc, version): one instance of a
//     service, a demo app behind its own sidecar;
//   - startMesh(c, sidecar, services, gatewayFlags...): an instance of each
//     service and the gateway edge in front of them (the chaos scenarios'
//     two-path deployment, startChaosMesh, and TestMTLSAndAuthorization's
//     secure mesh are two of them);
//   - startConsulCluster(t): Consul and a control plane that takes its
//     policy from files and its services from the catalog, where sidecars
//     started by consulSidecars register themselves;
//   - startReplicas(t, c, consul, n): n control planes sharing one Consul
//     (policy in KV, state encrypted in KV), c pointed at them.

// edgeGateway is the Gateway edge: one HTTP listener, on ${gw}.
const edgeGateway = `
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  gatewayClassName: meshgate
  listeners: [{name: http, protocol: HTTP, port: ${gw.port}}]
`

// staticServices are Services on port 80 whose one endpoint is the app
// itself, at ${name}.
func staticServices(names ...string) string { return services(names, "", "") }

// meshServices are Services on port 80 whose one endpoint is the inbound
// listener of the app's sidecar, at ${name-in} (startInstance's address).
func meshServices(names ...string) string { return services(names, "-in", ", sidecar: true") }

// services are Services on port 80 whose one endpoint is at
// ${<name><suffix>}, with more of the endpoint's fields.
func services(names []string, suffix, fields string) string {
	docs := make([]string, 0, len(names))
	for _, name := range names {
		docs = append(docs, `
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: `+name+`}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${`+name+suffix+`}"`+fields+`}]
`)
	}
	return yamlDocs(docs...)
}

// certificateTTL is the MeshConfig that sets the proxies' certificate
// lifetime.
func certificateTTL(ttl time.Duration) string {
	return fmt.Sprintf(`
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  certificateTTL: %ds
`, int(ttl.Seconds()))
}

// blueGreenServices is the gateway edge and two static services, blue and
// green, for routeTo to choose from.
func blueGreenServices() string { return yamlDocs(edgeGateway, staticServices("blue", "green")) }

// routeTo is the gateway's one route: every request to backend.
func routeTo(backend string) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: app}
spec:
  parentRefs: [{name: edge}]
  rules:
    - backendRefs: [{name: ` + backend + `, port: 80}]
`
}

// yamlDocs joins YAML documents (each possibly several already) into the
// content of one file; empty ones are left out.
func yamlDocs(docs ...string) string {
	var parts []string
	for _, d := range docs {
		if d = strings.TrimSpace(d); d != "" {
			parts = append(parts, d)
		}
	}
	return strings.Join(parts, "\n---\n") + "\n"
}

// startBlueGreen starts the apps blue and green, a control plane with
// blueGreenServices in services.yaml and routeTo("blue") in routes.yaml,
// and the gateway edge; it returns the cluster and the gateway's URL once
// blue answers there.
func startBlueGreen(t *testing.T) (*cluster, string) {
	t.Helper()
	c := newCluster(t)
	c.policy("services.yaml", blueGreenServices())
	c.policy("routes.yaml", routeTo("blue"))
	c.app("blue", "blue", "v1", "")
	c.app("green", "green", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	url := "http://" + c.addr("gw") + "/"
	c.expectEventually("routed to blue", 10*time.Second, url, nil, servedBy("blue"))
	return c, url
}

// sidecarStarter starts a sidecar for svc in front of app with the given
// inbound and outbound listeners: c.sidecar, or one of consulSidecars.
type sidecarStarter func(svc, app, inbound, outbound string) *proc

// consulSidecars starts sidecars that register themselves in consul (as
// c.consulSidecar does), with extra flags.
func consulSidecars(c *cluster, consul *consulAgent, extra ...string) sidecarStarter {
	return func(svc, app, inbound, outbound string) *proc {
		c.t.Helper()
		return c.consulSidecar(consul, svc, app, inbound, outbound, extra...)
	}
}

// instance is one instance of a service in the mesh: a demo app behind its
// own sidecar.
type instance struct {
	c                  *cluster
	name, svc, version string
	app                string // the app's address, ${name-app}
	inbound            string // the sidecar's inbound listener (the instance's endpoint), ${name-in}
	appProc, sidecar   *proc
}

// startInstance starts the instance name of svc: a demo app at
// ${name-app}, whose calls go out through its sidecar's outbound listener
// ${name-out}, behind a sidecar started by sidecar with its inbound
// listener at ${name-in}.
func (c *cluster) startInstance(sidecar sidecarStarter, name, svc, version string) *instance {
	c.t.Helper()
	i := &instance{c: c, name: name, svc: svc, version: version, inbound: c.addr(name + "-in")}
	out := c.addr(name + "-out")
	i.app, i.appProc = c.startApp(name+"-app", svc, version, out)
	i.sidecar = sidecar(svc, i.app, i.inbound, out)
	return i
}

// restartApp starts the instance's app again, on the same address.
func (i *instance) restartApp() {
	i.c.t.Helper()
	_, i.appProc = i.c.startApp(i.name+"-app", i.svc, i.version, i.c.addr(i.name+"-out"))
}

// mesh is a deployment of demo apps, one instance of each service behind
// its own sidecar (named after the service: ${svc-app}, ${svc-in},
// ${svc-out}), and the gateway edge in front of them; the control plane
// must be running.
type mesh struct {
	c        *cluster
	gw       string // http://the gateway's listener, ${gw}
	gateway  *proc
	sidecars map[string]*proc // by service
}

// startMesh starts an instance of each service (version v1), its sidecar
// started by sidecar, then the gateway edge with gatewayFlags.
func startMesh(c *cluster, sidecar sidecarStarter, services []string, gatewayFlags ...string) *mesh {
	c.t.Helper()
	m := &mesh{c: c, sidecars: map[string]*proc{}}
	for _, svc := range services {
		m.sidecars[svc] = c.startInstance(sidecar, svc, svc, "v1").sidecar
	}
	m.gateway = c.gateway("edge", gatewayFlags...)
	m.gw = "http://" + c.addr("gw")
	return m
}

// app is the URL of svc's app.
func (m *mesh) app(svc string) string { return "http://" + m.c.addr(svc+"-app") }

// sidecarAdmin is the admin address of svc's sidecar.
func (m *mesh) sidecarAdmin(svc string) string {
	return m.c.addr("sidecar-admin-" + m.c.addr(svc+"-in"))
}

// proxies are the mesh's proxies by name ("gateway", "<service> sidecar").
func (m *mesh) proxies() map[string]*proc {
	procs := map[string]*proc{"gateway": m.gateway}
	for svc, p := range m.sidecars {
		procs[svc+" sidecar"] = p
	}
	return procs
}

// admins are the admin addresses of the mesh's proxies, by the names of
// proxies.
func (m *mesh) admins() map[string]string {
	admins := map[string]string{"gateway": m.c.addr("gateway-admin-edge")}
	for svc := range m.sidecars {
		admins[svc+" sidecar"] = m.sidecarAdmin(svc)
	}
	return admins
}

// startConsulCluster starts a Consul agent and a control plane that takes
// its policy from files (edgeGateway, written here: routes naming Consul
// services are written once they are registered) and its services from
// the agent's catalog.
func startConsulCluster(t *testing.T) (*consulAgent, *cluster) {
	t.Helper()
	consul := startConsul(t)
	c := newCluster(t)
	c.policy("gateway.yaml", edgeGateway)
	c.startControlPlane("--consul", consul.addr)
	return consul, c
}

// cpReplica is one of several control planes sharing a Consul.
type cpReplica struct {
	xds, admin, dataDir string
	consul, keyFile     string
	proc                *proc
}

// startReplicas starts n control planes sharing consul (policy store,
// catalog, one state key: CA and tokens encrypted in KV) and returns them
// with their common admin token, once each has it. It points c at them:
// c's CLI talks to the first, c's proxies are given every replica, the
// last first (so that a join token minted by the first is used on
// another).
func startReplicas(t *testing.T, c *cluster, consul *consulAgent, n int) ([]*cpReplica, string) {
	t.Helper()
	keyFile := filepath.Join(t.TempDir(), "state.key")
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key)), 0o600); err != nil {
		t.Fatal(err)
	}
	replicas := make([]*cpReplica, n)
	xds := make([]string, n)
	for i := range replicas {
		replicas[i] = &cpReplica{xds: freeAddr(t), admin: freeAddr(t), dataDir: t.TempDir(),
			consul: consul.addr, keyFile: keyFile}
		replicas[i].start(t, fmt.Sprintf("controlplane-%d", i))
		xds[n-1-i] = replicas[i].xds
	}
	c.xds = strings.Join(xds, ",")
	c.admin, c.dataDir = replicas[0].admin, replicas[0].dataDir
	var token string
	eventually(t, 30*time.Second, "replicas up with one admin token", func() error {
		tokens := map[string]bool{}
		for _, r := range replicas {
			b, err := os.ReadFile(filepath.Join(r.dataDir, "admin-token"))
			if err != nil {
				return err
			}
			token = strings.TrimSpace(string(b))
			if _, err := r.status(token); err != nil {
				return err
			}
			tokens[token] = true
		}
		if len(tokens) != 1 {
			return fmt.Errorf("replicas have %d admin tokens", len(tokens))
		}
		return nil
	})
	return replicas, token
}

// start runs the replica (again, on the same addresses and data directory).
func (r *cpReplica) start(t *testing.T, name string) {
	t.Helper()
	r.proc = start(t, name, "controlplane", "--store", "consul", "--consul", r.consul,
		"--state-key-file", r.keyFile, "--data-dir", r.dataDir, "--xds-address", r.xds,
		"--admin-address", r.admin, "--log-level", "debug")
}

// status is the replica's /status.
func (r *cpReplica) status(token string) (*cpStatus, error) {
	var st cpStatus
	return &st, adminGet(r.admin, token, "/status", &st)
}

// cli runs an operator verb against this replica and returns stdout.
func (r *cpReplica) cli(args ...string) (string, error) {
	return (&cluster{admin: r.admin, dataDir: r.dataDir}).cli(args...)
}

// waitSameModel waits until every replica compiled one model without error.
func waitSameModel(t *testing.T, replicas []*cpReplica, token string) {
	t.Helper()
	eventually(t, 30*time.Second, "replicas compile the same model", func() error {
		versions := map[string]bool{}
		for _, r := range replicas {
			st, err := r.status(token)
			if err != nil {
				return err
			}
			if st.LastError != "" {
				return fmt.Errorf("replica %s: %s", r.admin, st.LastError)
			}
			versions[st.Version] = true
		}
		if len(versions) != 1 || versions[""] {
			return fmt.Errorf("model versions %v", versions)
		}
		return nil
	})
}

// applyToConsul stores policy (expanded) in consul's KV with `meshgate
// apply --store consul`, as an operator of replicas does.
func (c *cluster) applyToConsul(consul *consulAgent, policy string) {
	c.t.Helper()
	file := filepath.Join(c.t.TempDir(), "policy.yaml")
	writeFile(c.t, file, c.expand(policy))
	if out, err := runBinary("apply", "-f", file, "--store", "consul", "--consul", consul.addr); err != nil {
		c.t.Fatalf("apply: %v\n%s", err, out)
	}
}

// runBinary runs meshgate with args and returns its combined output.
func runBinary(args ...string) (string, error) {
	out, err := execCommand(binary, args...).CombinedOutput()
	return string(out), err
}
