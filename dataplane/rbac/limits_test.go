package rbac

import (
	"strings"
	"testing"
	"time"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"google.golang.org/protobuf/proto"
)

// TestDeepNestingIsRefusedQuickly: a permission or principal nested 10k
// deep (as a control plane could send it, through the wire) is refused with
// the depth limit, in bounded time.
func TestDeepNestingIsRefusedQuickly(t *testing.T) {
	t.Parallel()
	const depth = 10_000
	perm, prin := permAny(), prinAny()
	for range depth {
		perm, prin = permNot(perm), prinAnd(prin)
	}
	tests := []struct {
		name string
		pol  *rbacconfigv3.Policy
	}{
		{"permission", pol(perm, prinAny())},
		{"principal", pol(permAny(), prin)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{"deep": tt.pol})
			// Through the wire, as from xDS: the decoder has its own limit.
			wire, err := proto.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			decoded := cfg.ProtoReflect().New().Interface()
			decodeErr := proto.Unmarshal(wire, decoded)
			start := time.Now()
			_, err = Compile(cfg)
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Errorf("Compile took %v", elapsed)
			}
			if err == nil || !strings.Contains(err.Error(), "nested deeper than 32") {
				t.Fatalf("Compile = %v, want a nesting error", err)
			}
			if !strings.HasPrefix(err.Error(), "rbac") {
				t.Errorf("error does not name the config: %.200s", err)
			}
			t.Logf("decode: %v; compile: %.200s", decodeErr, err)
		})
	}
}
