package xdscheck

import (
	"strings"
	"testing"

	rbacconfigv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
)

// TestNestingBound: a resource nested deeper than MaxNesting is refused
// before anything walks it whole.
func TestNestingBound(t *testing.T) {
	p := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
	for range 5000 {
		p = &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_NotId{NotId: p}}
	}
	err := Check(p)
	if err == nil || !strings.Contains(err.Error(), "nested deeper than 100") {
		t.Fatalf("Check = %v, want a nesting error", err)
	}
	shallow := &rbacconfigv3.Principal{Identifier: &rbacconfigv3.Principal_Any{Any: true}}
	if tooDeep(shallow.ProtoReflect(), MaxNesting) {
		t.Fatal("a one-level message is too deep")
	}
}
