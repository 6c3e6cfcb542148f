package identity

import (
	"strings"
	"testing"

	"github.com/meshgate/meshgate/dataplane/identity/identitytest"
)

// TestForProxy: when a gateway or sidecar runs with an identity, and what it
// says without a join token.
func TestForProxy(t *testing.T) {
	t.Parallel()
	tok := identitytest.NewCA(t, "meshgate.local").Token(t)
	base := ManagerOptions{Namespace: "prod", Service: "orders", ControlPlaneAddresses: []string{"127.0.0.1:15010"}}
	tests := []struct {
		name     string
		mutate   func(*ManagerOptions)
		insecure bool
		wantID   string // "" with wantErr or insecure
		wantErr  string
	}{
		{name: "token", mutate: func(o *ManagerOptions) { o.Token = tok }, wantID: "spiffe://meshgate.local/ns/prod/svc/orders"},
		{name: "trust domain", mutate: func(o *ManagerOptions) { o.Token, o.TrustDomain = tok, "corp.example" }, wantID: "spiffe://corp.example/ns/prod/svc/orders"},
		{name: "insecure", mutate: func(*ManagerOptions) {}, insecure: true},
		{name: "no token", mutate: func(*ManagerOptions) {}, wantErr: "a join token is required: create one on the control plane with `meshgate token create --service orders --namespace prod`"},
		{name: "insecure with token", mutate: func(o *ManagerOptions) { o.Token = tok }, insecure: true, wantErr: "--insecure"},
		{name: "bad token", mutate: func(o *ManagerOptions) { o.Token = "secret" }, wantErr: "malformed join token"},
		{name: "bad trust domain", mutate: func(o *ManagerOptions) { o.Token, o.TrustDomain = tok, "Corp" }, wantErr: `trust domain "Corp"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := base
			tt.mutate(&opts)
			m, err := ForProxy(opts, tt.insecure)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("ForProxy() = %v, want error containing %q", err, tt.wantErr)
				}
				if strings.Contains(err.Error(), tok) {
					t.Fatal("the error shows the token")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tt.insecure {
				if m != nil {
					t.Fatal("insecure proxy has an identity")
				}
				return
			}
			if got := m.SPIFFEID(); got != tt.wantID {
				t.Fatalf("SPIFFE ID %s, want %s", got, tt.wantID)
			}
		})
	}
}
