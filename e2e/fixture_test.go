package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cluster is one test's deployment: a policy directory, a control plane and
// the proxies and demo services started around it, all separate processes.
type cluster struct {
	t       *testing.T
	dir     string            // policy directory
	dataDir string            // control plane state: CA, tokens, admin token
	vars    map[string]string // ${NAME} substitutions for policy files
	xds     string
	admin   string
	cp      *proc
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	e2eOnly(t)
	c := &cluster{t: t, dir: t.TempDir(), dataDir: t.TempDir(), vars: map[string]string{}, xds: freeAddr(t), admin: freeAddr(t)}
	return c
}

// addr allocates (once) a free loopback address under a name usable as
// ${name} in policy files and ${name.port} for its port.
func (c *cluster) addr(name string) string {
	if a, ok := c.vars[name]; ok {
		return a
	}
	a := freeAddr(c.t)
	c.vars[name] = a
	c.vars[name+".port"] = a[strings.LastIndex(a, ":")+1:]
	return a
}

func (c *cluster) expand(s string) string {
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			return s
		}
		j := strings.Index(s[i:], "}")
		if j < 0 {
			return s
		}
		name := s[i+2 : i+j]
		base := strings.TrimSuffix(name, ".port")
		c.addr(base)
		s = s[:i] + c.vars[name] + s[i+j+1:]
	}
}

// policy writes a policy file (atomically, like an editor) into the directory.
func (c *cluster) policy(file, content string) string {
	p := filepath.Join(c.dir, file)
	writeFile(c.t, p, c.expand(content))
	return p
}

// removePolicy deletes a policy file.
func (c *cluster) removePolicy(file string) {
	if err := os.Remove(filepath.Join(c.dir, file)); err != nil {
		c.t.Fatal(err)
	}
}

func (c *cluster) startControlPlane(extra ...string) *proc {
	c.t.Helper()
	args := append([]string{"controlplane", "--config", c.dir, "--data-dir", c.dataDir,
		"--xds-address", c.xds, "--admin-address", c.admin, "--log-level", "debug"}, extra...)
	c.cp = start(c.t, "controlplane", args...)
	eventually(c.t, 15*time.Second, "control plane admin up", func() error {
		_, err := c.status()
		return err
	})
	return c.cp
}

// adminToken is the control plane's admin API token from its data directory.
func (c *cluster) adminToken() string {
	b, err := os.ReadFile(filepath.Join(c.dataDir, "admin-token"))
	if err != nil {
		c.t.Fatalf("admin token: %v", err)
	}
	return strings.TrimSpace(string(b))
}

// status is the control plane's /status.
func (c *cluster) status() (*cpStatus, error) {
	var s cpStatus
	b, err := os.ReadFile(filepath.Join(c.dataDir, "admin-token"))
	if err != nil {
		return nil, err
	}
	return &s, adminGet(c.admin, strings.TrimSpace(string(b)), "/status", &s)
}

// cli runs an operator verb against the control plane and returns stdout.
func (c *cluster) cli(args ...string) (string, error) {
	args = append(args, "--admin", c.admin, "--data-dir", c.dataDir)
	cmd := exec.Command(binary, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return string(out), fmt.Errorf("meshgate %s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	return string(out), nil
}

// token creates a join token for a service.
func (c *cluster) token(service string) string {
	c.t.Helper()
	out, err := c.cli("token", "create", "--service", service, "--ttl", "1h")
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

// app starts a demo service named svc at the address ${svc-app-<instance>}.
func (c *cluster) app(name, svc, version, outbound string) string {
	c.t.Helper()
	addr, _ := c.startApp(name, svc, version, outbound)
	return addr
}

// startApp is app, also returning the process; started again under a name
// used before, the app listens on the same address.
func (c *cluster) startApp(name, svc, version, outbound string) (string, *proc) {
	c.t.Helper()
	addr := c.addr(name)
	args := []string{"demo-app", "--name", svc, "--version", version, "--listen", addr}
	if outbound != "" {
		args = append(args, "--outbound", outbound)
	}
	p := start(c.t, "app "+name, args...)
	eventually(c.t, 10*time.Second, "app "+name+" up", func() error {
		_, err := get("http://" + addr + "/")
		return err
	})
	return addr, p
}

// gateway starts the gateway name, with extra flags, and waits until it is
// ready; its admin address is ${gateway-admin-<name>}.
func (c *cluster) gateway(name string, extra ...string) *proc {
	c.t.Helper()
	admin := c.addr("gateway-admin-" + name)
	args := append([]string{"gateway", "--name", name, "--xds", c.xds, "--admin", admin,
		"--token", c.token(name), "--log-level", "debug"}, extra...)
	p := start(c.t, "gateway "+name, args...)
	c.waitReady(admin)
	return p
}

// sidecar starts a sidecar for svc in front of app, with inbound and
// outbound at the named addresses.
func (c *cluster) sidecar(svc, app, inbound, outbound string) *proc {
	c.t.Helper()
	admin := c.addr("sidecar-admin-" + inbound)
	p := start(c.t, "sidecar "+svc, "sidecar", "--service", svc, "--app", app,
		"--inbound", inbound, "--outbound", outbound, "--xds", c.xds, "--admin", admin,
		"--id", "sidecar~"+svc+"~"+inbound, "--token", c.token(svc), "--log-level", "debug")
	c.waitReady(admin)
	return p
}

func (c *cluster) waitReady(admin string) {
	c.t.Helper()
	eventually(c.t, 15*time.Second, "proxy at "+admin+" ready", func() error {
		resp, err := client.Get("http://" + admin + "/ready")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("ready: %d", resp.StatusCode)
		}
		return nil
	})
}

// expectEventually polls a request until check passes.
func (c *cluster) expectEventually(what string, timeout time.Duration, url string, headers []string, check func(*response) error) {
	c.t.Helper()
	eventually(c.t, timeout, what, func() error {
		r, err := get(url, headers...)
		if err != nil {
			return err
		}
		return check(r)
	})
}

// servedBy checks a response came from the demo service svc with status 200.
func servedBy(svc string) func(*response) error {
	return func(r *response) error {
		if r.status != http.StatusOK || r.reply.Service != svc {
			return fmt.Errorf("want 200 from %q, got %d from %q: %.200s", svc, r.status, r.reply.Service, r.body)
		}
		return nil
	}
}
