package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/miekg/dns"
)

// assignedVIP is the virtual IP the control plane sends the proxy node in
// the cluster of the service port (default/<service>:<port>), read from
// its GET /config_dump.
func assignedVIP(c *cluster, node, clusterName string) (string, error) {
	var dump struct {
		Resources struct {
			Clusters []struct {
				Name     string `json:"name"`
				Metadata struct {
					FilterMetadata map[string]struct {
						VIP       string   `json:"vip"`
						Hostnames []string `json:"hostnames"`
					} `json:"filterMetadata"`
				} `json:"metadata"`
			} `json:"clusters"`
		} `json:"resources"`
	}
	if err := adminGet(c.admin, c.adminToken(), "/config_dump?node="+node, &dump); err != nil {
		return "", err
	}
	for _, cl := range dump.Resources.Clusters {
		if cl.Name == clusterName {
			if svc, ok := cl.Metadata.FilterMetadata["meshgate.dev/service"]; ok && svc.VIP != "" {
				return svc.VIP, nil
			}
			return "", fmt.Errorf("cluster %s has no meshgate.dev/service VIP", clusterName)
		}
	}
	return "", fmt.Errorf("node %s has no cluster %s yet", node, clusterName)
}

// lookupA asks the resolver at server for name's A records over network.
func lookupA(network, server, name string) ([]string, int, error) {
	m := new(dns.Msg).SetQuestion(dns.Fqdn(name), dns.TypeA)
	resp, _, err := (&dns.Client{Net: network, Timeout: 5 * time.Second}).Exchange(m, server)
	if err != nil {
		return nil, 0, err
	}
	var out []string
	for _, rr := range resp.Answer {
		if a, ok := rr.(*dns.A); ok {
			out = append(out, a.A.String())
		}
	}
	return out, resp.Rcode, nil
}

// TestSidecarDNS: a sidecar with --dns-listen answers the mesh services'
// names with the virtual IPs the control plane assigned (a service
// registered in Consul later resolves too), forwards other names to
// --dns-upstream, and counts both on its /metrics.
func TestSidecarDNS(t *testing.T) {
	t.Parallel()
	consul, c := startConsulCluster(t)

	// The upstream resolver: answers every A query with 192.0.2.7.
	var forwarded atomic.Int64
	upstream := startTestResolver(t, &forwarded)

	agent := consul.client.Agent()
	register := func(name string) {
		t.Helper()
		host, port, _ := net.SplitHostPort(c.addr(name + "-app"))
		p, _ := strconv.Atoi(port)
		if err := agent.ServiceRegister(&api.AgentServiceRegistration{ID: name + "-1", Name: name, Address: host, Port: p,
			Check: &api.AgentServiceCheck{CheckID: name + "-ttl", TTL: "10m", Status: api.HealthPassing}}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = agent.ServiceDeregister(name + "-1") })
	}
	register("orders")

	app := c.app("web-app", "web", "v1", "")
	admin, dnsAddr, inbound := c.addr("web-admin"), c.addr("web-dns"), c.addr("web-in")
	node := "sidecar~web~" + inbound
	start(t, "sidecar web", "sidecar", "--service", "web", "--app", app,
		"--inbound", inbound, "--outbound", c.addr("web-out"), "--xds", c.xds, "--admin", admin,
		"--id", node, "--token", c.token("web"), "--log-level", "debug",
		"--dns-listen", dnsAddr, "--dns-upstream", upstream)
	c.waitReady(admin)

	resolves := func(name, cluster string) {
		t.Helper()
		eventually(t, 20*time.Second, name+" resolves to its VIP", func() error {
			vip, err := assignedVIP(c, node, cluster)
			if err != nil {
				return err
			}
			if !netip.MustParsePrefix("240.240.0.0/16").Contains(netip.MustParseAddr(vip)) {
				return fmt.Errorf("VIP %s outside the default range", vip)
			}
			for _, network := range []string{"udp", "tcp"} {
				got, rcode, err := lookupA(network, dnsAddr, name)
				if err != nil {
					return err
				}
				if rcode != dns.RcodeSuccess || len(got) != 1 || got[0] != vip {
					return fmt.Errorf("%s %s: %s %v; want %s", network, name, dns.RcodeToString[rcode], got, vip)
				}
			}
			return nil
		})
	}
	resolves("orders", "default/orders:80")
	resolves("orders.default.svc.meshgate.local", "default/orders:80")

	t.Run("other names are forwarded", func(t *testing.T) {
		before := forwarded.Load()
		got, rcode, err := lookupA("udp", dnsAddr, "example.com")
		if err != nil || rcode != dns.RcodeSuccess || strings.Join(got, ",") != "192.0.2.7" {
			t.Fatalf("example.com: %v %s %v; want the upstream's 192.0.2.7", got, dns.RcodeToString[rcode], err)
		}
		if forwarded.Load() != before+1 {
			t.Errorf("the upstream was asked %d times; want once", forwarded.Load()-before)
		}
	})

	t.Run("a service registered later resolves", func(t *testing.T) {
		register("payments")
		resolves("payments.default", "default/payments:80")
	})

	t.Run("queries are counted", func(t *testing.T) {
		r, err := get("http://" + admin + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{`meshgate_proxy_dns_queries_total{result="local"}`, `meshgate_proxy_dns_queries_total{result="forwarded"} 1`} {
			if !strings.Contains(r.body, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})
}

// startTestResolver serves DNS on a free loopback port (UDP and TCP),
// answering every A query with 192.0.2.7 and counting the queries.
func startTestResolver(t *testing.T, count *atomic.Int64) string {
	t.Helper()
	addr := freeAddr(t)
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	handler := dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		count.Add(1)
		m := new(dns.Msg).SetReply(req)
		if q := req.Question[0]; q.Qtype == dns.TypeA {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
				A: net.IPv4(192, 0, 2, 7)})
		}
		_ = w.WriteMsg(m)
	})
	for _, s := range []*dns.Server{{PacketConn: pc, Handler: handler}, {Listener: ln, Handler: handler}} {
		go func() { _ = s.ActivateAndServe() }()
		t.Cleanup(func() { _ = s.Shutdown() })
	}
	return addr
}
