package e2e

import (
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/meshgate/meshgate/internal/netnstest"
)

// upstreamDNS serves, on a free UDP port of ip, the one name it knows
// (name → addr, A records) and an empty answer to everything else: the
// resolver a sidecar forwards the names of no mesh service to. It
// returns its ip:port.
func upstreamDNS(t *testing.T, ip, name, addr string) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		for _, q := range req.Question {
			if q.Qtype == dns.TypeA && strings.EqualFold(q.Name, dns.Fqdn(name)) {
				m.Answer = append(m.Answer, &dns.A{
					Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 5},
					A:   net.ParseIP(addr),
				})
			}
		}
		_ = w.WriteMsg(m)
	})}
	go func() { _ = srv.ActivateAndServe() }()
	t.Cleanup(func() { _ = srv.Shutdown() })
	return pc.LocalAddr().String()
}

// TestTransparentNames: an application in its own network namespace,
// behind a sidecar run with --capture and --dns-listen, calls services by
// their plain names (curl http://orders/items, a TCP exchange with
// echo:7000) with its resolv.conf and code unchanged: its port-53 traffic
// is redirected to the sidecar's resolver, which answers the mesh names
// with their virtual IPs, and the captured connections cross the mesh
// with mTLS (the servers' sidecars see the caller's SPIFFE ID); a
// SecurityPolicy deny applies to a call by name; a name outside the mesh
// still resolves, through the sidecar's upstream resolver.
func TestTransparentNames(t *testing.T) {
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
	hostIP, appIP := net24+".1", net24+".2"
	ns.Link(t, hostIP+"/24", appIP+"/24")
	c.xds = addrOn(c, hostIP, "xds")
	ordersIn, secretIn, echoIn := addrOn(c, hostIP, "orders-in"), addrOn(c, hostIP, "secret-in"), addrOn(c, hostIP, "echo-in")
	webIn, webAdmin := addrOn(c, appIP, "web-in"), addrOn(c, appIP, "web-admin")
	upstream := upstreamDNS(t, hostIP, "external.example", "192.0.2.77")
	logFile := filepath.Join(t.TempDir(), "access.log")
	c.policy("mesh.yaml", transparentMeshPolicy(logFile, "echo", 7000))
	c.startControlPlane()
	c.sidecar("orders", c.app("orders-app", "orders", "v1", ""), ordersIn, c.addr("orders-out"))
	c.sidecar("secret", c.app("secret-app", "secret", "v1", ""), secretIn, c.addr("secret-out"))
	c.sidecar("echo", tcpEcho(t, "echo", nil), echoIn, c.addr("echo-out"))

	startIn(t, ns, "app web", "demo-app", "--name", "web", "--version", "v1", "--listen", "127.0.0.1:8080")
	// The sidecar knows of no DNS redirect: --capture with --dns-listen
	// installs it.
	startIn(t, ns, "sidecar web", "sidecar", "--service", "web", "--app", "127.0.0.1:8080",
		"--inbound", webIn, "--outbound", "127.0.0.1:15001", "--xds", c.xds, "--admin", webAdmin,
		"--id", "sidecar~web~names", "--token", c.token("web"), "--log-level", "debug",
		"--capture", "--dns-listen", "127.0.0.1:15053", "--dns-upstream", upstream)
	c.waitReady(webAdmin)

	t.Run("curl http://orders/items", func(t *testing.T) {
		eventually(t, 15*time.Second, "app calls orders by name", func() error {
			code, body, err := appGet(ns, "http://orders/items")
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
	t.Run("TCP to echo:7000", func(t *testing.T) {
		eventually(t, 15*time.Second, "app reaches echo by name", func() error {
			got, err := appEcho(ns, "echo:7000", "ping")
			if err != nil {
				return err
			}
			if got != "echo: ping" {
				return fmt.Errorf("answer %q", got)
			}
			return nil
		})
		waitLines(t, logFile, 1, "the echo sidecar's line with web's identity", func(l accessLine) bool {
			return l.str("proxy") == "default/echo" && strings.HasSuffix(l.str("peer"), "/ns/default/svc/web")
		})
	})
	t.Run("SecurityPolicy deny by name", func(t *testing.T) {
		eventually(t, 15*time.Second, "app denied secret", func() error {
			code, body, err := appGet(ns, "http://secret/")
			if err != nil {
				return err
			}
			if code != 403 {
				return fmt.Errorf("%d %.300s, want 403", code, body)
			}
			return nil
		})
	})
	t.Run("an external name resolves through the upstream", func(t *testing.T) {
		out, err := runAsApp(ns, "getent", "ahostsv4", "external.example")
		if err != nil || !strings.Contains(out, "192.0.2.77") {
			t.Errorf("getent ahostsv4 external.example: %q, %v; want 192.0.2.77 from the upstream", out, err)
		}
	})
}
