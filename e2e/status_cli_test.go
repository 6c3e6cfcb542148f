package e2e

import (
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// cliProxy is one proxy of meshgate proxies -o json|yaml.
type cliProxy struct {
	ID          string `json:"id" yaml:"id"`
	Role        string `json:"role" yaml:"role"`
	Name        string `json:"name" yaml:"name"`
	Address     string `json:"address" yaml:"address"`
	SPIFFEID    string `json:"spiffeID" yaml:"spiffeID"`
	CertExpires string `json:"certExpires" yaml:"certExpires"`
	Versions    map[string]struct {
		Acked    string `json:"acked" yaml:"acked"`
		Served   string `json:"served" yaml:"served"`
		Rejected string `json:"rejected" yaml:"rejected"`
	} `json:"versions" yaml:"versions"`
	InSync   bool `json:"inSync" yaml:"inSync"`
	LastNack *struct {
		Type    string `json:"type" yaml:"type"`
		Version string `json:"version" yaml:"version"`
		Error   string `json:"error" yaml:"error"`
		At      string `json:"at" yaml:"at"`
	} `json:"lastNack" yaml:"lastNack"`
}

// cliProxies runs meshgate proxies -o format and decodes it, by role.
func cliProxies(c *cluster, format string) (map[string]cliProxy, error) {
	out, err := c.cli("proxies", "-o", format)
	if err != nil {
		return nil, err
	}
	var list struct {
		Proxies []cliProxy `json:"proxies" yaml:"proxies"`
	}
	if format == "yaml" {
		err = yaml.Unmarshal([]byte(out), &list)
	} else {
		err = json.Unmarshal([]byte(out), &list)
	}
	if err != nil {
		return nil, fmt.Errorf("meshgate proxies -o %s: %w:\n%s", format, err, out)
	}
	byRole := map[string]cliProxy{}
	for _, p := range list.Proxies {
		byRole[p.Role] = p
	}
	return byRole, nil
}

// inSyncOnEveryType checks that p accepted the served version of LDS, CDS
// and EDS (and of every type it has).
func inSyncOnEveryType(p cliProxy) error {
	if !p.InSync {
		return fmt.Errorf("%s not in sync: %+v", p.ID, p.Versions)
	}
	for _, typ := range []string{"LDS", "CDS", "EDS"} {
		if v := p.Versions[typ]; v.Acked == "" || v.Acked != v.Served {
			return fmt.Errorf("%s %s: acked %q, served %q", p.ID, typ, v.Acked, v.Served)
		}
	}
	return nil
}

// TestStatusAndProxiesCLI: meshgate proxies shows each proxy's identity,
// the version it accepted of each xDS type and that it is in sync;
// meshgate status counts them by role and on the latest config. A
// configuration the gateway rejects (a listener on a port in use) shows as
// its last NACK (LDS, the rejected version, the error) and out of sync,
// and status says one proxy rejects a configuration; the next accepted
// version brings it back in sync, the NACK still shown.
func TestStatusAndProxiesCLI(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("mesh.yaml", yamlDocs(edgeGateway, routeTo("orders"), meshServices("orders")))
	c.startControlPlane()
	startMesh(c, c.sidecar, []string{"orders"})

	var proxies map[string]cliProxy
	eventually(t, 15*time.Second, "both proxies in sync", func() error {
		var err error
		if proxies, err = cliProxies(c, "json"); err != nil {
			return err
		}
		for _, role := range []string{"gateway", "sidecar"} {
			p, ok := proxies[role]
			if !ok {
				return fmt.Errorf("no %s in %+v", role, proxies)
			}
			if err := inSyncOnEveryType(p); err != nil {
				return err
			}
		}
		return nil
	})
	gw, sc := proxies["gateway"], proxies["sidecar"]
	if gw.Name != "edge" || sc.Name != "orders" || sc.Address != c.addr("orders-in") || gw.Address == "" {
		t.Errorf("names and addresses: gateway %q at %q, sidecar %q at %q", gw.Name, gw.Address, sc.Name, sc.Address)
	}
	if !strings.HasSuffix(sc.SPIFFEID, "/ns/default/svc/orders") || sc.CertExpires == "" || gw.LastNack != nil {
		t.Errorf("sidecar identity %q expiring %q; gateway last NACK %+v", sc.SPIFFEID, sc.CertExpires, gw.LastNack)
	}
	table, err := c.cli("proxies")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"LDS", "SYNC", "LAST-NACK", gw.ID, sc.SPIFFEID, gw.Versions["LDS"].Acked[:8]} {
		if !strings.Contains(table, want) {
			t.Errorf("meshgate proxies lacks %q:\n%s", want, table)
		}
	}
	status, err := c.cli("status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"health: ok", "by role: gateway 1, sidecar 1", "on the latest config: 2 of 2 (0 rejecting"} {
		if !strings.Contains(strings.Join(strings.Fields(status), " "), want) {
			t.Errorf("meshgate status lacks %q:\n%s", want, status)
		}
	}
	var st struct {
		ProxyCounts struct {
			Connected int            `yaml:"connected"`
			OnLatest  int            `yaml:"onLatest"`
			ByRole    map[string]int `yaml:"byRole"`
		} `yaml:"proxyCounts"`
	}
	out, err := c.cli("status", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal([]byte(out), &st); err != nil || st.ProxyCounts.Connected != 2 || st.ProxyCounts.OnLatest != 2 || st.ProxyCounts.ByRole["gateway"] != 1 {
		t.Errorf("meshgate status -o yaml (%v): %+v\n%s", err, st, out)
	}

	// A second gateway listener on a port in use: the gateway rejects the
	// listeners.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	port := taken.Addr().(*net.TCPAddr).Port
	c.policy("mesh.yaml", yamlDocs(strings.Replace(edgeGateway, "listeners: [{name: http, protocol: HTTP, port: ${gw.port}}]",
		fmt.Sprintf("listeners: [{name: http, protocol: HTTP, port: ${gw.port}}, {name: taken, protocol: HTTP, port: %d}]", port), 1),
		routeTo("orders"), meshServices("orders")))
	eventually(t, 15*time.Second, "the gateway's NACK shown", func() error {
		if proxies, err = cliProxies(c, "yaml"); err != nil {
			return err
		}
		gw = proxies["gateway"]
		if n := gw.LastNack; n == nil || n.Type != "LDS" || n.Version == "" || n.Version != gw.Versions["LDS"].Served ||
			!strings.Contains(n.Error, fmt.Sprint(port)) || n.At == "" {
			return fmt.Errorf("gateway last NACK %+v, served LDS %q", gw.LastNack, gw.Versions["LDS"].Served)
		}
		return nil
	})
	if gw.InSync || gw.Versions["LDS"].Rejected == "" || gw.Versions["LDS"].Acked == gw.Versions["LDS"].Served {
		t.Errorf("gateway after a NACK: in sync %v, LDS %+v", gw.InSync, gw.Versions["LDS"])
	}
	rejected := gw.LastNack.Version
	status, err = c.cli("status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"health: degraded", "1 proxy(ies) rejecting a configuration", "on the latest config: 1 of 2 (1 rejecting"} {
		if !strings.Contains(strings.Join(strings.Fields(status), " "), want) {
			t.Errorf("meshgate status lacks %q:\n%s", want, status)
		}
	}
	if table, err = c.cli("proxies"); err != nil || !strings.Contains(table, "LDS "+rejected[:8]) {
		t.Errorf("meshgate proxies (%v) does not show the NACK of %s:\n%s", err, rejected, table)
	}

	// Back to one listener: accepted, in sync, the NACK kept.
	c.policy("mesh.yaml", yamlDocs(edgeGateway, routeTo("orders"), meshServices("orders")))
	eventually(t, 15*time.Second, "the gateway in sync again", func() error {
		if proxies, err = cliProxies(c, "json"); err != nil {
			return err
		}
		return inSyncOnEveryType(proxies["gateway"])
	})
	if n := proxies["gateway"].LastNack; n == nil || n.Version != rejected {
		t.Errorf("last NACK after a later ACK: %+v, want the one of %s kept", n, rejected)
	}
}
