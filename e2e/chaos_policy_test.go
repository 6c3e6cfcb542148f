package e2e

import (
	"fmt"
	"slices"
	"strconv"
	"testing"
	"time"
)

// TestChaosPolicyEdits: the routes file is edited the level's number of
// times (100 at full) under load at the gateway and on a sidecar→sidecar
// hop; each edit changes both routes and is waited for: no request fails,
// and every edit is served by the gateway and by the caller's sidecar.
func TestChaosPolicyEdits(t *testing.T) {
	t.Parallel()
	s := newChaos(t, "policy edits (files)")
	s.fault = fmt.Sprintf("%d policy edits (files)", s.level.edits)
	c, m := startChaosFiles(t, "")
	m.startLoads(s)

	s.beginFault()
	took := make([]time.Duration, 0, s.level.edits)
	for i := 1; i <= s.level.edits; i++ {
		edit := strconv.Itoa(i)
		c.policy("routes.yaml", chaosRoutes(edit, true))
		took = append(took, m.waitEdit(t, 15*time.Second, edit, true))
	}
	s.endFault()
	slices.Sort(took)
	s.notef("every edit served on both paths, %s after its write at the median, %s at most",
		took[len(took)/2].Round(10*time.Millisecond), took[len(took)-1].Round(10*time.Millisecond))
	st, err := c.status()
	if err != nil {
		t.Fatal(err)
	}
	if st.LastError != "" {
		t.Errorf("control plane reports %q after the edits", st.LastError)
	}
	s.finish()
}
