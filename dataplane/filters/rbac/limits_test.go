package rbac

import (
	"strings"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/internal/testutil"
)

// TestDeepNestingIsRefusedQuickly: a permission or principal nested 10k
// deep (as a control plane could send it, through the wire) is refused with
// the depth limit, looking no deeper than it: the refusal allocates about
// the same at depth 10k as at depth 50 (allocations, unlike time, do not
// depend on the machine's load). Not parallel: the allocation counters are the
// process's.
func TestDeepNestingIsRefusedQuickly(t *testing.T) {
	nested := func(depth int) (*rbacconfigv3.Permission, *rbacconfigv3.Principal) {
		perm, prin := permAny(), prinAny()
		for range depth {
			perm, prin = permNot(perm), prinAnd(prin)
		}
		return perm, prin
	}
	tests := []struct {
		name string
		pol  func(depth int) *rbacconfigv3.Policy
	}{
		{"permission", func(depth int) *rbacconfigv3.Policy { perm, _ := nested(depth); return pol(perm, prinAny()) }},
		{"principal", func(depth int) *rbacconfigv3.Policy { _, prin := nested(depth); return pol(permAny(), prin) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			refusal := func(depth int) testutil.Allocation {
				cfg := rules(rbacconfigv3.RBAC_ALLOW, map[string]*rbacconfigv3.Policy{"deep": tt.pol(depth)})
				// Through the wire, as from xDS: the decoder has its own limit.
				wire, err := proto.Marshal(cfg)
				if err != nil {
					t.Fatal(err)
				}
				decodeErr := proto.Unmarshal(wire, cfg.ProtoReflect().New().Interface())
				_, _ = Compile(cfg) // warm-up
				a := testutil.Allocated(func() { _, err = Compile(cfg) })
				if err == nil || !strings.Contains(err.Error(), "nested deeper than 32") {
					t.Fatalf("depth %d: Compile = %v, want a nesting error", depth, err)
				}
				if !strings.HasPrefix(err.Error(), "rbac") {
					t.Errorf("error does not name the config: %.200s", err)
				}
				t.Logf("depth %d: decode: %v; compile: %+v: %.200s", depth, decodeErr, a, err)
				return a
			}
			// The same, give or take fmt's pooled printers (the race
			// detector drops pooled items at random): twice is a margin; a
			// walk of the whole depth allocates hundreds of times more.
			shallow, deep := refusal(50), refusal(10_000)
			if deep.Objects > 2*shallow.Objects+64 || deep.Bytes > 2*shallow.Bytes+64<<10 {
				t.Errorf("refusing depth 10000 allocated %+v, depth 50 %+v: want about the same (the walk stops at the limit)", deep, shallow)
			}
		})
	}
}
