package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/nftables"

	"github.com/meshgate/meshgate/internal/netnstest"
)

// nobody is the user the captured application runs as: not the sidecar's
// (root here), whose own traffic the rules exclude.
const nobody = 65534

// startIn is start for a process in the network namespace ns.
func startIn(t *testing.T, ns *netnstest.NS, name string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	args = withoutDrainDelay(args)
	p.cmd = exec.Command(binary, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	if err := ns.Start(p.cmd); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("---- output of %s (%s)\n%s", name, strings.Join(args, " "), p.out.String())
		}
	})
	return p
}

// runAsApp runs a command in ns as the application's user and returns its
// output.
func runAsApp(ns *netnstest.NS, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	var out []byte
	var err error
	ns.Do(func() { out, err = cmd.CombinedOutput() })
	return string(out), err
}

// appGet is the application's plain HTTP GET of url (curl, which knows
// nothing of the sidecar): the status and the body.
func appGet(ns *netnstest.NS, url string) (int, string, error) {
	out, err := runAsApp(ns, "curl", "-sS", "-m", "5", "-o", "-", "-w", "\n%{http_code}", url)
	if err != nil {
		return 0, out, fmt.Errorf("curl %s: %w: %s", url, err, out)
	}
	i := strings.LastIndexByte(out, '\n')
	code, _ := strconv.Atoi(out[i+1:])
	return code, out[:i], nil
}

// appEcho is the application's TCP exchange of one line with addr (bash's
// /dev/tcp): the answer.
func appEcho(ns *netnstest.NS, addr, line string) (string, error) {
	host, port, _ := net.SplitHostPort(addr)
	script := fmt.Sprintf("exec 3<>/dev/tcp/%s/%s && echo %s >&3 && timeout 5 head -n 1 <&3", host, port, line)
	out, err := runAsApp(ns, "bash", "-c", script)
	if err != nil {
		return out, fmt.Errorf("tcp %s: %w: %s", addr, err, out)
	}
	return strings.TrimSpace(out), nil
}

// nsRuleset is the namespace's nftables ruleset as text: tables, chains
// and rule counts.
func nsRuleset(t *testing.T, ns *netnstest.NS) string {
	t.Helper()
	conn, err := nftables.New(nftables.WithNetNSFd(ns.FD()))
	if err != nil {
		t.Fatal(err)
	}
	chains, err := conn.ListChains()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := conn.ListTables()
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
		lines = append(lines, fmt.Sprintf("chain %s/%s: %d rules", ch.Table.Name, ch.Name, len(rules)))
	}
	slices.Sort(lines)
	return strings.Join(lines, "; ")
}

// tcpEchoAt is tcpEcho on a given address.
func tcpEchoAt(t *testing.T, name, addr string) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
				buf := make([]byte, 256)
				n, _ := conn.Read(buf)
				_, _ = fmt.Fprintf(conn, "%s: %s", name, buf[:n])
			}()
		}
	}()
}

// clusterVIP is the virtual IP of the service of cluster name, as the
// proxy whose admin is at admin received it (its /config_dump: the
// cluster's metadata.filter_metadata["meshgate.dev/service"].vip).
func clusterVIP(admin, name string) (string, error) {
	resp, err := client.Get("http://" + admin + "/config_dump")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var dump any
	if err := json.NewDecoder(resp.Body).Decode(&dump); err != nil {
		return "", err
	}
	var find func(v any) string
	find = func(v any) string {
		switch v := v.(type) {
		case map[string]any:
			if v["name"] == name {
				if md, ok := v["metadata"].(map[string]any); ok {
					fm, _ := md["filterMetadata"].(map[string]any)
					if fm == nil {
						fm, _ = md["filter_metadata"].(map[string]any)
					}
					if svc, ok := fm["meshgate.dev/service"].(map[string]any); ok {
						if vip, ok := svc["vip"].(string); ok {
							return vip
						}
					}
				}
			}
			for _, e := range v {
				if got := find(e); got != "" {
					return got
				}
			}
		case []any:
			for _, e := range v {
				if got := find(e); got != "" {
					return got
				}
			}
		}
		return ""
	}
	if vip := find(dump); vip != "" {
		return vip, nil
	}
	return "", fmt.Errorf("no virtual IP for cluster %s in %s/config_dump", name, admin)
}

// addrOn allocates (once) the address named name, as cluster.addr does, but
// on ip instead of loopback: an address reached across the test's veth.
func addrOn(c *cluster, ip, name string) string {
	_, port, _ := net.SplitHostPort(c.addr(name))
	c.vars[name] = net.JoinHostPort(ip, port)
	return c.vars[name]
}

// transparentMeshPolicy is the transparent-mode tests' mesh: HTTP services
// orders and secret (web may not call secret), the caller web, and the TCP
// service tcpName on tcpPort, each at the address ${<name>-in} behind a
// sidecar; every proxy logs to logFile.
func transparentMeshPolicy(logFile, tcpName string, tcpPort int) string {
	return fmt.Sprintf(`
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  accessLog: {path: %q}
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${orders-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: secret}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${secret-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: %[2]s}
spec:
  ports: [{port: %[3]d, protocol: TCP}]
  endpoints: [{address: "${%[2]s-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${web-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: secret-guard}
spec:
  targetRefs: [{kind: Service, name: secret}]
  rules:
    - name: no-web
      action: DENY
      from: [{services: [web]}]
`, logFile, tcpName, tcpPort)
}

// TestTransparentCapture: an application in its own network namespace,
// behind a sidecar run with --capture, calls other services by name
// (resolved by the sidecar), at their virtual IPs and at their endpoint
// addresses with plain HTTP and TCP, knowing nothing of the
// sidecar: the calls cross the mesh with mTLS (the server's sidecar logs
// the caller's SPIFFE ID), a SecurityPolicy deny applies, an excluded port
// bypasses the sidecar and another unknown destination is refused
// (capture_unknown deny), or passed through to its original destination
// (the default); a plaintext client connecting to the app's port from
// outside lands on the mTLS inbound listener, not the app. A clean stop
// removes the rules, leaving the ruleset as it was; after SIGKILL the
// rules stay and captured connections are refused (fail closed) until
// "meshgate capture remove".
func TestTransparentCapture(t *testing.T) {
	t.Parallel()
	if why := netnstest.Available(); why != "" {
		if testing.Short() {
			t.Skip(why)
		}
		t.Fatal(why)
	}
	c := newCluster(t)
	ns := netnstest.New(t)
	net24 := netnstest.Subnet()
	hostIP, appIP, secretIP := net24+".1", net24+".2", net24+".3"
	hostIf := ns.Link(t, hostIP+"/24", appIP+"/24")
	if out, err := exec.Command("ip", "addr", "add", secretIP+"/24", "dev", hostIf).CombinedOutput(); err != nil {
		t.Fatalf("ip addr add: %v: %s", err, out)
	}
	// Every address the namespace reaches is on the veth: the services'
	// sidecars' inbound listeners, the control plane's xDS.
	c.xds = addrOn(c, hostIP, "xds")
	ordersIn, secretIn, dbIn := addrOn(c, hostIP, "orders-in"), addrOn(c, secretIP, "secret-in"), addrOn(c, hostIP, "db-in")
	webIn, webAdmin := addrOn(c, appIP, "web-in"), addrOn(c, appIP, "web-admin")
	tcpEchoAt(t, "excluded", net.JoinHostPort(hostIP, "8081"))
	tcpEchoAt(t, "unknown", net.JoinHostPort(hostIP, "8082"))
	c.vars["db-app"] = tcpEcho(t, "db", nil)
	logFile := filepath.Join(t.TempDir(), "access.log")
	c.policy("mesh.yaml", transparentMeshPolicy(logFile, "db", 5432))
	c.startControlPlane()
	c.sidecar("orders", c.app("orders-app", "orders", "v1", ""), ordersIn, c.addr("orders-out"))
	c.sidecar("secret", c.app("secret-app", "secret", "v1", ""), secretIn, c.addr("secret-out"))
	c.sidecar("db", c.vars["db-app"], dbIn, c.addr("db-out"))

	// The application: the demo app on every address of its namespace.
	startIn(t, ns, "app web", "demo-app", "--name", "web", "--version", "v1", "--listen", "0.0.0.0:8080")
	eventually(t, 10*time.Second, "web app up", func() error {
		r, err := get("http://" + appIP + ":8080/")
		if err != nil {
			return err
		}
		return servedBy("web")(r)
	})
	before := nsRuleset(t, ns)
	sidecarArgs := []string{"sidecar", "--service", "web", "--app", "127.0.0.1:8080",
		"--inbound", webIn, "--outbound", "127.0.0.1:15001", "--xds", c.xds, "--admin", webAdmin,
		"--id", "sidecar~web~capture", "--token", c.token("web"), "--log-level", "debug",
		"--capture", "--capture-unknown", "deny", "--capture-exclude-port", "8081", "--dns-listen", "127.0.0.1:15053"}
	sidecar := startIn(t, ns, "sidecar web", sidecarArgs...)
	c.waitReady(webAdmin)

	t.Run("HTTP to an endpoint address goes through the mesh with mTLS", func(t *testing.T) {
		eventually(t, 15*time.Second, "app calls orders", func() error {
			code, body, err := appGet(ns, "http://"+hostIP+"/items")
			if err != nil {
				return err
			}
			if code != 200 || !strings.Contains(body, `"service":"orders"`) || !strings.Contains(body, `"path":"/items"`) {
				return fmt.Errorf("%d %.300s", code, body)
			}
			return nil
		})
		lines := waitLines(t, logFile, 1, "the orders sidecar's line", func(l accessLine) bool {
			return l.str("proxy") == "default/orders" && l.str("path") == "/items"
		})
		if peer := lines[0].str("peer"); !strings.HasSuffix(peer, "/ns/default/svc/web") {
			t.Errorf("orders saw peer %q, want web's SPIFFE ID", peer)
		}
	})
	t.Run("HTTP and TCP to a service's virtual IP", func(t *testing.T) {
		ordersVIP, err := clusterVIP(webAdmin, "default/orders:80")
		if err != nil {
			t.Fatal(err)
		}
		dbVIP, err := clusterVIP(webAdmin, "default/db:5432")
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 15*time.Second, "app calls orders by its VIP", func() error {
			code, body, err := appGet(ns, "http://"+ordersVIP+"/by-vip")
			if err != nil {
				return err
			}
			if code != 200 || !strings.Contains(body, `"service":"orders"`) || !strings.Contains(body, `"path":"/by-vip"`) {
				return fmt.Errorf("%d %.300s", code, body)
			}
			return nil
		})
		lines := waitLines(t, logFile, 1, "the orders sidecar's line", func(l accessLine) bool {
			return l.str("proxy") == "default/orders" && l.str("path") == "/by-vip"
		})
		if peer := lines[0].str("peer"); !strings.HasSuffix(peer, "/ns/default/svc/web") {
			t.Errorf("orders saw peer %q, want web's SPIFFE ID", peer)
		}
		// The caller's sidecar logs the request once, as its outbound
		// listener would.
		waitLines(t, logFile, 1, "the web sidecar's line", func(l accessLine) bool {
			return l.str("proxy") == "default/web" && l.str("path") == "/by-vip"
		})
		if all, err := accessLines(logFile); err != nil || len(slices.DeleteFunc(all, func(l accessLine) bool {
			return l.str("proxy") != "default/web" || l.str("path") != "/by-vip"
		})) != 1 {
			t.Errorf("the web sidecar's lines for /by-vip: want 1 (%v)", err)
		}
		if got, err := appEcho(ns, net.JoinHostPort(dbVIP, "5432"), "vip"); err != nil || got != "db: vip" {
			t.Errorf("db by VIP: %q, %v", got, err)
		}
	})
	t.Run("by name: DNS to the sidecar's resolver, then the VIP", func(t *testing.T) {
		// The app resolves with the host's resolv.conf, whose server the
		// namespace cannot even reach: the rules send port 53 to the
		// sidecar's resolver.
		eventually(t, 15*time.Second, "app calls http://orders/", func() error {
			code, body, err := appGet(ns, "http://orders/by-name")
			if err != nil {
				return err
			}
			if code != 200 || !strings.Contains(body, `"service":"orders"`) || !strings.Contains(body, `"path":"/by-name"`) {
				return fmt.Errorf("%d %.300s", code, body)
			}
			return nil
		})
		if got, err := appEcho(ns, "db.default:5432", "by-name"); err != nil || got != "db: by-name" {
			t.Errorf("db by name: %q, %v", got, err)
		}
	})
	t.Run("h2c with prior knowledge is detected as HTTP", func(t *testing.T) {
		ordersVIP, err := clusterVIP(webAdmin, "default/orders:80")
		if err != nil {
			t.Fatal(err)
		}
		// The http_inspector sees the HTTP/2 connection preface: the chain
		// of an HTTP service, routed by the connection manager, not the
		// default chain (closed here: capture_unknown deny).
		eventually(t, 15*time.Second, "app calls orders over h2c", func() error {
			out, err := runAsApp(ns, "curl", "-sS", "-m", "5", "--http2-prior-knowledge", "-o", "-", "-w", "\n%{http_code} %{http_version}", "http://"+ordersVIP+"/h2c")
			if err != nil {
				return fmt.Errorf("curl: %w: %s", err, out)
			}
			if !strings.HasSuffix(out, "200 2") || !strings.Contains(out, `"service":"orders"`) || !strings.Contains(out, `"path":"/h2c"`) {
				return fmt.Errorf("%.300s", out)
			}
			return nil
		})
	})
	t.Run("routed by the service called, not the Host header", func(t *testing.T) {
		ordersVIP, err := clusterVIP(webAdmin, "default/orders:80")
		if err != nil {
			t.Fatal(err)
		}
		// Sent to orders' VIP with secret's name in Host: orders serves
		// it (secret's policy, which denies web, is not involved).
		eventually(t, 15*time.Second, "app calls orders' VIP with Host: secret", func() error {
			out, err := runAsApp(ns, "curl", "-sS", "-m", "5", "-H", "Host: secret", "-o", "-", "-w", "\n%{http_code}", "http://"+ordersVIP+"/spoofed-host")
			if err != nil {
				return fmt.Errorf("curl: %w: %s", err, out)
			}
			if !strings.HasSuffix(out, "\n200") || !strings.Contains(out, `"service":"orders"`) || !strings.Contains(out, `"path":"/spoofed-host"`) {
				return fmt.Errorf("%.300s", out)
			}
			return nil
		})
		if code, body, err := appGet(ns, "http://orders/by-name-again"); err != nil || code != 200 || !strings.Contains(body, `"service":"orders"`) {
			t.Errorf("orders by name: %d %.300s %v", code, body, err)
		}
	})
	t.Run("X-Forwarded-For: a hop per proxy", func(t *testing.T) {
		// The web sidecar appends the app's address, the orders sidecar
		// the web sidecar's: the same address when captured (one network
		// namespace), loopback then it through the explicit outbound
		// listener.
		for _, tc := range []struct{ url, host, want string }{
			{url: "http://orders/xff", want: `"x-forwarded-for":"` + appIP + `, ` + appIP + `"`},
			{url: "http://127.0.0.1:15001/xff", host: "orders", want: `"x-forwarded-for":"127.0.0.1, ` + appIP + `"`},
		} {
			args := []string{"-sS", "-m", "5", "-o", "-", tc.url}
			if tc.host != "" {
				args = append(args, "-H", "Host: "+tc.host)
			}
			out, err := runAsApp(ns, "curl", args...)
			if err != nil || !strings.Contains(out, `"service":"orders"`) || !strings.Contains(out, tc.want) {
				t.Errorf("%s: %v %.400s, want %s", tc.url, err, out, tc.want)
			}
		}
	})
	t.Run("SecurityPolicy deny", func(t *testing.T) {
		eventually(t, 15*time.Second, "app denied secret", func() error {
			code, body, err := appGet(ns, "http://"+secretIP+"/")
			if err != nil {
				return err
			}
			if code != 403 {
				return fmt.Errorf("%d %.300s, want 403", code, body)
			}
			return nil
		})
	})
	t.Run("raw TCP service", func(t *testing.T) {
		eventually(t, 15*time.Second, "app reaches db over TCP", func() error {
			got, err := appEcho(ns, net.JoinHostPort(hostIP, "5432"), "ping")
			if err != nil {
				return err
			}
			if got != "db: ping" {
				return fmt.Errorf("answer %q", got)
			}
			return nil
		})
		waitLines(t, logFile, 1, "the db sidecar's line with web's identity", func(l accessLine) bool {
			return l.str("proxy") == "default/db" && strings.HasSuffix(l.str("peer"), "/ns/default/svc/web")
		})
	})
	t.Run("excluded port bypasses, unknown destination denied", func(t *testing.T) {
		if got, err := appEcho(ns, net.JoinHostPort(hostIP, "8081"), "hi"); err != nil || got != "excluded: hi" {
			t.Errorf("excluded port: %q, %v; want the echo, directly", got, err)
		}
		if got, err := appEcho(ns, net.JoinHostPort(hostIP, "8082"), "hi"); err == nil && got != "" {
			t.Errorf("unknown destination: %q, want the connection closed (capture_unknown deny)", got)
		}
	})
	t.Run("plaintext to the app's port lands on the mTLS inbound listener", func(t *testing.T) {
		if r, err := get("http://" + appIP + ":8080/"); err == nil && r.reply.Service == "web" {
			t.Errorf("a plaintext client reached the app: %d %.200s", r.status, r.body)
		}
	})
	t.Run("clean stop removes the rules", func(t *testing.T) {
		if got := nsRuleset(t, ns); got == before {
			t.Fatal("the sidecar installed no rules")
		}
		sidecar.stop()
		if got := nsRuleset(t, ns); got != before {
			t.Fatalf("ruleset after a clean stop: %s\nwant as before: %s", got, before)
		}
	})
	t.Run("passthrough, then SIGKILL fails closed until remove", func(t *testing.T) {
		// Again, with the default capture_unknown: passthrough.
		args := slices.DeleteFunc(slices.Clone(sidecarArgs), func(a string) bool { return a == "--capture-unknown" || a == "deny" })
		sidecar = startIn(t, ns, "sidecar web (passthrough)", args...)
		c.waitReady(webAdmin)
		eventually(t, 15*time.Second, "unknown destination passed through", func() error {
			got, err := appEcho(ns, net.JoinHostPort(hostIP, "8082"), "hi")
			if err == nil && got != "unknown: hi" {
				err = fmt.Errorf("answer %q", got)
			}
			return err
		})
		waitLines(t, logFile, 1, "the web sidecar's passthrough line", func(l accessLine) bool {
			return l.str("proxy") == "default/web" && l.str("upstream_cluster") == "passthrough" && l.str("upstream_host") == net.JoinHostPort(hostIP, "8082")
		})
		eventually(t, 15*time.Second, "app calls orders again", func() error {
			code, body, err := appGet(ns, "http://"+hostIP+"/items")
			if err == nil && code != 200 {
				err = fmt.Errorf("%d %.200s", code, body)
			}
			return err
		})
		sidecar.kill()
		// The rules stay and redirect to a port nobody listens on: the
		// connection is refused at once, even to a destination the app
		// reaches without the rules.
		if got := nsRuleset(t, ns); got == before {
			t.Fatal("no rules left after SIGKILL")
		}
		if got, err := appEcho(ns, net.JoinHostPort(hostIP, "8082"), "hi"); err == nil || !strings.Contains(err.Error(), "refused") {
			t.Errorf("after SIGKILL: %q, %v; want the connection refused", got, err)
		}
		var out []byte
		var err error
		ns.Do(func() { out, err = exec.Command(binary, "capture", "remove").CombinedOutput() })
		if err != nil {
			t.Fatalf("capture remove: %v: %s", err, out)
		}
		if got := nsRuleset(t, ns); got != before {
			t.Fatalf("ruleset after remove: %s\nwant as before: %s", got, before)
		}
		if got, err := appEcho(ns, net.JoinHostPort(hostIP, "8082"), "hi"); err != nil || got != "unknown: hi" {
			t.Errorf("after remove: %q, %v; want the echo, directly", got, err)
		}
	})
}
