package tokens

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/meshgate/meshgate/api/token"
	"github.com/meshgate/meshgate/controlplane/state"
)

type clock struct{ t atomic.Pointer[time.Time] }

func (c *clock) now() time.Time      { return *c.t.Load() }
func (c *clock) set(t time.Time)     { c.t.Store(&t) }
func (c *clock) add(d time.Duration) { c.set(c.now().Add(d)) }

func newRegistry(t *testing.T) (*Registry, *clock, state.Store) {
	t.Helper()
	c := &clock{}
	c.set(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	st := state.NewMemory()
	r, err := New(Options{Store: st, PinRoot: func() []byte { return []byte("root-der") }, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	return r, c, st
}

func TestCreateVerifyRevoke(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, c, st := newRegistry(t)
	tok, rec, err := r.Create(ctx, "orders", "", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := token.Parse(tok)
	if err != nil {
		t.Fatalf("created token does not parse: %v", err)
	}
	if parsed.Pin != token.PinOf([]byte("root-der")) || parsed.ID != rec.ID {
		t.Errorf("token pin/id = %s/%s", parsed.Pin, parsed.ID)
	}
	if rec.Namespace != "default" || rec.Service != "orders" || !rec.ExpiresAt.Equal(c.now().Add(time.Hour)) {
		t.Errorf("record = %+v", rec)
	}
	all, _ := st.List(ctx, "")
	for k, v := range all {
		if strings.Contains(string(v), parsed.Secret) {
			t.Errorf("%s stores the secret", k)
		}
	}
	got, err := r.Verify(ctx, tok)
	if err != nil || got.ID != rec.ID {
		t.Fatalf("Verify = %+v, %v", got, err)
	}

	wrongSecret := token.Token{ID: parsed.ID, Secret: strings.Repeat("A", 43), Pin: parsed.Pin}.String()
	unknown := token.Token{ID: "0123456789abcdef", Secret: parsed.Secret, Pin: parsed.Pin}.String()
	for name, bad := range map[string]string{"wrong secret": wrongSecret, "unknown id": unknown, "garbage": "hello", "empty": ""} {
		if _, err := r.Verify(ctx, bad); !errors.Is(err, ErrInvalid) || err.Error() != ErrInvalid.Error() {
			t.Errorf("Verify(%s) = %v, want exactly ErrInvalid", name, err)
		}
	}

	c.add(time.Hour)
	if _, err := r.Verify(ctx, tok); !errors.Is(err, ErrExpired) {
		t.Errorf("Verify expired = %v", err)
	}
	c.add(-time.Minute)
	if _, err := r.Revoke(ctx, rec.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Revoke(ctx, rec.ID); err != nil {
		t.Fatalf("second Revoke: %v", err)
	}
	if _, err := r.Verify(ctx, tok); !errors.Is(err, ErrRevoked) {
		t.Errorf("Verify revoked = %v", err)
	}
	if _, err := r.Revoke(ctx, "fedcba9876543210"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Revoke unknown = %v", err)
	}
	list, err := r.List(ctx)
	if err != nil || len(list) != 1 || !list[0].Revoked || list[0].RevokedAt == nil {
		t.Fatalf("List = %+v, %v", list, err)
	}
	// Lookup finds a revoked (or expired) token by id, for the CA's
	// lineage checks; an unknown id is ErrNotFound.
	if got, err := r.Lookup(ctx, rec.ID); err != nil || !got.Revoked || got.ID != rec.ID || got.Service != "orders" {
		t.Errorf("Lookup = %+v, %v; want the revoked record", got, err)
	}
	for _, id := range []string{"fedcba9876543210", "../../etc", ""} {
		if _, err := r.Lookup(ctx, id); !errors.Is(err, ErrNotFound) {
			t.Errorf("Lookup(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

func TestCreateRejects(t *testing.T) {
	t.Parallel()
	r, _, _ := newRegistry(t)
	tests := []struct {
		name, service, namespace string
		ttl                      time.Duration
	}{
		{"no service", "", "default", time.Hour},
		{"bad service", "Orders", "default", time.Hour},
		{"slash", "a/b", "default", time.Hour},
		{"bad namespace", "orders", "-x", time.Hour},
		{"reserved namespace", "controlplane", "meshgate-system", time.Hour},
		{"short ttl", "orders", "default", time.Second},
		{"negative ttl", "orders", "default", -time.Hour},
		{"long ttl", "orders", "default", MaxTTL + time.Hour},
	}
	for _, tt := range tests {
		if _, _, err := r.Create(context.Background(), tt.service, tt.namespace, tt.ttl); err == nil {
			t.Errorf("%s: Create succeeded", tt.name)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	r, _, _ := newRegistry(t)
	var wg sync.WaitGroup
	toks := make([]string, 16)
	for i := range toks {
		wg.Go(func() {
			tok, rec, err := r.Create(ctx, "svc", "default", time.Hour)
			if err != nil {
				t.Error(err)
				return
			}
			toks[i] = tok
			if _, err := r.Verify(ctx, tok); err != nil {
				t.Error(err)
			}
			if _, err := r.Revoke(ctx, rec.ID); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	list, err := r.List(ctx)
	if err != nil || len(list) != len(toks) {
		t.Fatalf("List = %d, %v", len(list), err)
	}
}
