package main

import (
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/controlplane/xds"
)

func TestPrintStatus(t *testing.T) {
	t.Parallel()
	at := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		st   controlplane.Status
		want []string
	}{
		{
			name: "waiting",
			st:   controlplane.Status{WaitingFor: []string{"consul catalog", "policy files"}, Proxies: []xds.ProxyStatus{{ID: "gateway~edge~1"}}},
			want: []string{"serving:", "no: nothing is pushed", "(waiting for: consul catalog, policy files)", "version:      -", "proxies:      1 (0 held)"},
		},
		{
			name: "serving, holding",
			st: controlplane.Status{Serving: true, Version: "abc", LastReload: at,
				HeldPolicyChange: &controlplane.HeldPolicyChange{Reason: "policy file a.yaml holds no document any more (it held 2)", Since: at, ApplyAt: at.Add(5 * time.Second)},
				Proxies:          []xds.ProxyStatus{{ID: "gateway~edge~1", Held: "the new configuration would remove every endpoint (3) without a policy change", HeldSince: at}, {ID: "sidecar~orders~1"}}},
			want: []string{"serving:             yes", "version:             abc", "last reload:         2030-01-02T03:04:05Z",
				"held policy change:  policy file a.yaml holds no document any more (it held 2) (since 2030-01-02T03:04:05Z; applied at 2030-01-02T03:04:10Z",
				"proxies:             2 (1 held)", "held gateway~edge~1:  the new configuration would remove every endpoint (3)"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var b strings.Builder
			if err := printStatus(&b, tt.st); err != nil {
				t.Fatal(err)
			}
			// Columns are aligned: compare with single spaces.
			got := strings.Join(strings.Fields(b.String()), " ")
			for _, w := range tt.want {
				if w = strings.Join(strings.Fields(w), " "); !strings.Contains(got, w) {
					t.Errorf("output lacks %q:\n%s", w, b.String())
				}
			}
		})
	}
}
