package e2e

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestChaosJoinTokenRevocation: with the shortest certificate lifetime
// (1m) and load on the gateway and sidecar→sidecar paths, two more callers
// of orders are revoked: billing's join token (meshgate token revoke) and
// audit's identity (meshgate proxies revoke --service). The control plane
// closes their connections at once and does not let them back
// (meshgate proxies no longer lists them), refuses their renewals, and once
// their certificates have expired their calls to orders fail and no longer
// succeed; the other paths, whose certificates renew every 30 s meanwhile,
// lose nothing. The fault lasts from the revocation until both revoked
// callers' calls fail: at most one certificate lifetime.
func TestChaosJoinTokenRevocation(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "join token and identity of two callers revoked, certificateTTL 1m")
	// Two more callers of orders, each behind its own sidecar: billing gets
	// its join token revoked, audit its identity.
	revoked := []string{"billing", "audit"}
	c, m := startChaosFiles(t, yamlDocs(meshServices(revoked...), certificateTTL(time.Minute)))
	sidecars, apps := map[string]*proc{}, map[string]string{}
	for _, svc := range revoked {
		sidecars[svc] = c.startInstance(c.sidecar, svc, svc, "v1").sidecar
		apps[svc] = m.app(svc)
	}
	loops := map[string]*callLoop{}
	for _, svc := range revoked {
		eventually(t, 30*time.Second, svc+" reaches orders", func() error {
			return probe(apps[svc]+"/call/orders/items", upstreamFrom("orders"))
		})
		loops[svc] = startCalls(t, apps[svc], "orders")
	}
	m.startLoads(s)

	node := func(svc string) string { return "sidecar~" + svc + "~" + c.addr(svc+"-in") }
	var st revocationStatus
	if err := adminGet(c.admin, c.adminToken(), "/status", &st); err != nil {
		t.Fatal(err)
	}
	billingToken := ""
	for _, p := range st.Proxies {
		if p.ID == node("billing") {
			billingToken = p.TokenID
		}
	}
	if billingToken == "" {
		t.Fatalf("no token id for %s in /status: %+v", node("billing"), st.Proxies)
	}

	s.beginFault()
	// Each closes the revoked sidecar's connection to the control plane
	// (and one of a renewal, should it be under way).
	closedSome := regexp.MustCompile(`closed [12] connection`)
	out, err := c.cli("token", "revoke", billingToken)
	if err != nil || !closedSome.MatchString(out) {
		t.Fatalf("token revoke: %v\n%s", err, out)
	}
	out, err = c.cli("proxies", "revoke", "--service", "audit")
	if err != nil || !closedSome.MatchString(out) {
		t.Fatalf("proxies revoke --service audit: %v\n%s", err, out)
	}
	// Their last certificates were issued before now: they expire within a
	// lifetime.
	latestExpiry := time.Now().Add(time.Minute)
	notListed := func(what string) {
		t.Helper()
		out, err := c.cli("proxies")
		if err != nil {
			t.Fatal(err)
		}
		for _, svc := range revoked {
			if strings.Contains(out, node(svc)) {
				t.Errorf("meshgate proxies lists %s %s:\n%s", node(svc), what, out)
			}
		}
		for _, svc := range []string{"frontend", "orders"} {
			if !strings.Contains(out, node(svc)) {
				t.Errorf("meshgate proxies lost %s %s:\n%s", node(svc), what, out)
			}
		}
	}
	notListed("right after its revocation")

	// Their renewals (at half their lifetime) are refused.
	for _, svc := range revoked {
		eventually(t, 45*time.Second, svc+"'s renewal refused", func() error {
			if !strings.Contains(sidecars[svc].out.String(), "refused to renew this proxy's certificate") {
				return fmt.Errorf("%s has not been refused a renewal", svc)
			}
			return nil
		})
	}
	// Once their certificates have expired, their calls fail.
	for _, svc := range revoked {
		eventually(t, time.Until(latestExpiry)+20*time.Second, svc+"'s calls fail", func() error {
			if probe(apps[svc]+"/call/orders/items", upstreamFrom("orders")) == nil {
				return fmt.Errorf("%s still reaches orders", svc)
			}
			return nil
		})
	}
	s.endFault()
	time.Sleep(time.Second) // calls after the expiry: part of the observation
	var findings []string
	for _, svc := range revoked {
		loops[svc].halt()
		ok, failed, lastOK, firstFail := loops[svc].state()
		// (A call completing as the certificate expires is recorded a
		// moment later.)
		if lastOK.After(latestExpiry.Add(time.Second)) {
			t.Errorf("%s's call succeeded at %s, after its certificate expired (by %s)", svc, lastOK, latestExpiry)
		}
		if firstFail.IsZero() {
			t.Errorf("%s: no call failed", svc)
			continue
		}
		findings = append(findings, fmt.Sprintf("%s's calls failed from %s after the revocation (%d ok before, %d failed)",
			svc, firstFail.Sub(s.faultStart).Round(100*time.Millisecond), ok, len(failed)))
	}
	notListed("after its certificate expired")
	s.notef("both revoked sidecars' xDS connections closed at once and not let back, renewals refused; %s", strings.Join(findings, "; "))
	s.finish()
}
