package e2e

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/policy"
)

// TestChaosCertificateRotation: with the shortest certificate lifetime the
// policy accepts (policy.MinCertificateTTL, 1m), under load at the gateway
// and on a sidecar→sidecar hop, no request fails and every proxy renews
// about every TTL/2: each gap between its "certificate issued" and
// "certificate renewed" log lines is within [TTL/4, 3·TTL/4], and so is the
// time since its last one. At the quick level it watches until every proxy
// has renewed once (about TTL/2); full and soak watch longer.
func TestChaosCertificateRotation(t *testing.T) {
	t.Parallel()
	ttl := policy.MinCertificateTTL
	s := newChaos(t, "certificate rotation, certificateTTL "+strings.TrimSuffix(ttl.String(), "0s"))
	c := newCluster(t)
	c.policy("services.yaml", chaosGatewayPolicy+chaosStaticServices+fmt.Sprintf(`
---
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  certificateTTL: %ds
`, int(ttl.Seconds())))
	c.policy("routes.yaml", chaosRoutes("0", true))
	c.startControlPlane()
	m := startChaosMesh(c, c.sidecar)
	m.waitServing(t)
	m.startLoads(s)
	proxies := map[string]*proc{"gateway": m.gateway, "frontend sidecar": m.sidecars["frontend"], "orders sidecar": m.sidecars["orders"]}

	s.beginFault()
	if s.level.certWatch > 0 {
		time.Sleep(s.level.certWatch) // the observation window itself
	} else {
		eventually(t, 2*ttl, "every proxy renewed its certificate once", func() error {
			for name, p := range proxies {
				if events := certificateEvents(p.out.String()); len(events) < 2 {
					return fmt.Errorf("the %s has not renewed yet", name)
				}
			}
			return nil
		})
	}
	s.endFault()

	lo, hi := ttl/4, 3*ttl/4
	var summary []string
	for _, name := range slices.Sorted(maps.Keys(proxies)) {
		events := certificateEvents(proxies[name].out.String())
		if len(events) < 2 {
			t.Errorf("the %s renewed no certificate in %s (TTL %s)", name, s.faultEnd.Sub(s.faultStart).Round(time.Second), ttl)
			continue
		}
		var gaps []time.Duration
		for i := 1; i < len(events); i++ {
			gaps = append(gaps, events[i].Sub(events[i-1]))
		}
		tail := s.faultEnd.Sub(events[len(events)-1])
		var bad []string
		for _, g := range gaps {
			if g < lo || g > hi {
				bad = append(bad, roundGap(g).String())
			}
		}
		if len(bad) > 0 {
			t.Errorf("the %s renewed with gaps outside [%s, %s] (%d renewals): %s", name, lo, hi, len(gaps), strings.Join(bad, ", "))
		}
		if tail > hi {
			t.Errorf("the %s has not renewed for %s (TTL %s)", name, tail.Round(time.Second), ttl)
		}
		summary = append(summary, fmt.Sprintf("%s %d (%s–%s apart)", name, len(gaps), roundGap(slices.Min(gaps)), roundGap(slices.Max(gaps))))
	}
	s.notef("renewals: %s; goal every %s–%s", strings.Join(summary, ", "), lo, hi)
	s.finish()
}

// certificateEvents are the times of a proxy's "certificate issued" and
// "certificate renewed" log lines (slog text format), in order.
func certificateEvents(log string) []time.Time {
	var events []time.Time
	for line := range strings.Lines(log) {
		if !strings.Contains(line, `msg="certificate issued"`) && !strings.Contains(line, `msg="certificate renewed"`) {
			continue
		}
		field, ok := strings.CutPrefix(line, "time=")
		if !ok {
			continue
		}
		stamp, _, _ := strings.Cut(field, " ")
		if at, err := time.Parse(time.RFC3339Nano, stamp); err == nil {
			events = append(events, at)
		}
	}
	return events
}

// roundGap rounds to a readable precision: milliseconds below a second.
func roundGap(d time.Duration) time.Duration {
	if d < time.Second {
		return d.Round(time.Millisecond)
	}
	return d.Round(100 * time.Millisecond)
}
