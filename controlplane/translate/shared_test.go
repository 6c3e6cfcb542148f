package translate

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/meshgate/meshgate/controlplane/model"
)

// TestSharedMatchesGolden translates every golden case with one Shared for
// all nodes, concurrently and twice per node, and requires the very bytes of
// the golden files: sharing changes nothing on the wire.
func TestSharedMatchesGolden(t *testing.T) {
	t.Parallel()
	for name, set := range goldenCases(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			m, err := model.Compile(set)
			if err != nil {
				t.Fatalf("Compile: %v", err)
			}
			shared := NewShared(m, inputsFor(name))
			nodes := nodesFor(m)
			results := make([]*Resources, len(nodes)*2)
			errs := make([]error, len(results))
			var wg sync.WaitGroup
			for i := range results {
				wg.Go(func() { results[i], errs[i] = shared.Translate(nodes[i%len(nodes)]) })
			}
			wg.Wait()
			out := map[string]*Resources{}
			for i, res := range results {
				if errs[i] != nil {
					t.Fatalf("Translate(%s): %v", nodes[i%len(nodes)].ID, errs[i])
				}
				out[nodes[i%len(nodes)].ID] = res
			}
			got, err := json.MarshalIndent(out, "", "  ")
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join("testdata", name+".golden.json"))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(append(got, '\n'), want) {
				t.Errorf("Shared.Translate differs from %s.golden.json", name)
			}
		})
	}
}

// TestSharedSharesMessages checks that two sidecars of one namespace get the
// same cluster, load assignment, outbound route and secret messages, and
// their own listeners.
func TestSharedSharesMessages(t *testing.T) {
	t.Parallel()
	set := goldenCases(t)["zerotrust"]
	m, err := model.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	shared := NewShared(m, inputsFor("zerotrust"))
	var sidecars []NodeInfo
	for _, n := range nodesFor(m) {
		if n.Role == RoleSidecar && (len(sidecars) == 0 || n.Namespace == sidecars[0].Namespace) {
			sidecars = append(sidecars, n)
		}
	}
	if len(sidecars) < 2 {
		t.Fatalf("want two sidecars of one namespace in the zerotrust case, have %d", len(sidecars))
	}
	a, err := shared.Translate(sidecars[0])
	if err != nil {
		t.Fatal(err)
	}
	b, err := shared.Translate(sidecars[1])
	if err != nil {
		t.Fatal(err)
	}
	byName := func(r *Resources) map[string]any {
		out := map[string]any{}
		for _, c := range r.Clusters {
			out["cluster "+c.Name] = c
		}
		for _, e := range r.Endpoints {
			out["cla "+e.ClusterName] = e
		}
		for _, rc := range r.Routes {
			out["route "+rc.Name] = rc
		}
		for _, l := range r.Listeners {
			out["listener "+l.Name] = l
		}
		for _, s := range r.Secrets {
			out["secret "+s.Name] = s
		}
		return out
	}
	am, bm := byName(a), byName(b)
	tests := []struct {
		key        string
		wantShared bool
	}{
		{"route outbound", true},
		{"secret ROOTCA", true},
		{"listener outbound", false},
		{"listener inbound", false},
	}
	for _, tt := range tests {
		if am[tt.key] == nil || bm[tt.key] == nil {
			t.Errorf("%s missing", tt.key)
			continue
		}
		if got := am[tt.key] == bm[tt.key]; got != tt.wantShared {
			t.Errorf("%s shared = %v, want %v", tt.key, got, tt.wantShared)
		}
	}
	sharedClusters := 0
	for k, v := range am {
		if (len(k) > 8 && k[:8] == "cluster ") || (len(k) > 4 && k[:4] == "cla ") {
			if bm[k] == v {
				sharedClusters++
			}
		}
	}
	if sharedClusters == 0 {
		t.Error("no cluster or load assignment is shared between two sidecars")
	}
}
