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
// and on a sidecar→sidecar hop, the operator rotates the root (meshgate ca
// rotate begin, switch, finish) while every proxy renews about every TTL/2.
// No request fails. The new root reaches every proxy's trust bundle before
// it signs; every proxy renews from it within a lifetime; once the old root
// is dropped the proxies trust the new one alone and traffic flows on. Each
// gap between a proxy's "certificate issued" and "certificate renewed" log
// lines is within [TTL/4, 3·TTL/4], and so is the time since its last one.
// The quick level watches until every proxy has renewed from the new root
// (about TTL/2) and drops the old root then (--force: finish without it
// waits one TTL after the switch, which controlplane/ca's tests check);
// full and soak watch longer, and finish as an operator would, one TTL
// after the switch.
func TestChaosCertificateRotation(t *testing.T) {
	t.Parallel()
	ttl := policy.MinCertificateTTL
	s := newChaos(t, "certificate renewals and a root rotation, certificateTTL "+strings.TrimSuffix(ttl.String(), "0s"))
	c, m := startChaosFiles(t, certificateTTL(ttl))
	proxies, admins := m.proxies(), m.admins()
	m.startLoads(s)
	firstExpiry := map[string]time.Time{}
	eventually(t, 15*time.Second, "every proxy's certificate in /status", func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		for _, p := range st.Proxies {
			firstExpiry[p.ID] = p.CertNotAfter
		}
		if len(firstExpiry) != len(proxies) {
			return fmt.Errorf("%d proxies listed, want %d", len(firstExpiry), len(proxies))
		}
		return nil
	})
	rotate := func(step ...string) {
		t.Helper()
		if out, err := c.cli(append([]string{"ca", "rotate"}, step...)...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
	}

	s.beginFault()
	rotate("begin")
	eventually(t, 15*time.Second, "every proxy trusts both roots", trustBundleRoots(admins, 2))
	rotate("switch")
	switched := time.Now()
	eventually(t, 2*ttl, "every proxy renewed from the new root", func() error {
		for name, p := range proxies {
			if events := certificateEvents(p.out.String()); len(events) == 0 || events[len(events)-1].Before(switched) {
				return fmt.Errorf("the %s has not renewed since the switch", name)
			}
		}
		st, err := c.status()
		if err != nil {
			return err
		}
		for _, p := range st.Proxies {
			if !p.CertNotAfter.After(firstExpiry[p.ID].Add(10 * time.Second)) {
				return fmt.Errorf("%s still expires at %s", p.ID, p.CertNotAfter)
			}
		}
		return nil
	})
	s.notef("every proxy renewed from the new root %s after the switch", time.Since(switched).Round(100*time.Millisecond))
	if s.level.certWatch > ttl {
		eventually(t, ttl+30*time.Second, "the old root dropped one TTL after the switch", func() error {
			_, err := c.cli("ca", "rotate", "finish")
			return err
		})
	} else {
		rotate("finish", "--force")
	}
	dropped := time.Now()
	eventually(t, 15*time.Second, "every proxy trusts the new root alone", trustBundleRoots(admins, 1))
	s.waitTraffic("traffic on both paths after the old root was dropped", dropped, 100)
	s.notef("the old root dropped %s after the switch; traffic flowed on", dropped.Sub(switched).Round(100*time.Millisecond))
	if d := s.level.certWatch - time.Since(s.faultStart); d > 0 {
		time.Sleep(d) // the rest of the observation window itself
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

// trustBundleRoots is a condition for eventually: every proxy (admin
// addresses by name) trusts n roots (its /stats).
func trustBundleRoots(admins map[string]string, n int) func() error {
	return func() error {
		for name, admin := range admins {
			var stats struct {
				Roots int `json:"trust_bundle_roots"`
			}
			if err := adminGet(admin, "", "/stats", &stats); err != nil {
				return err
			}
			if stats.Roots != n {
				return fmt.Errorf("the %s trusts %d roots, want %d", name, stats.Roots, n)
			}
		}
		return nil
	}
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
