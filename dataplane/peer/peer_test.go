package peer

import (
	"context"
	"testing"
)

func TestIdentity(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		ctx  context.Context
		want string
	}{
		{name: "no identity", ctx: context.Background(), want: ""},
		{name: "empty identity is plaintext", ctx: WithIdentity(context.Background(), ""), want: ""},
		{name: "spiffe id", ctx: WithIdentity(context.Background(), "spiffe://meshgate.local/ns/default/svc/web"), want: "spiffe://meshgate.local/ns/default/svc/web"},
		{name: "nil context", ctx: nil, want: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Identity(tt.ctx); got != tt.want {
				t.Fatalf("Identity() = %q, want %q", got, tt.want)
			}
		})
	}
}
