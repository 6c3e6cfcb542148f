package state_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/controlplane/state/consultest"
	"github.com/meshgate/meshgate/internal/testutil"
)

func randomKey(t *testing.T) []byte {
	t.Helper()
	k := make([]byte, state.KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func newConsulStore(t *testing.T, client *api.Client, prefix string, key []byte) *state.Consul {
	t.Helper()
	s, err := state.NewConsul(client, prefix, key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConsulStore(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	ctx := context.Background()
	key := randomKey(t)
	s := newConsulStore(t, agent.Client, "meshgate/state", key)

	t.Run("contract", func(t *testing.T) {
		if _, err := s.Get(ctx, "ca/state.json"); !errors.Is(err, state.ErrNotFound) {
			t.Fatalf("Get missing = %v, want ErrNotFound", err)
		}
		for k, v := range map[string]string{"ca/roots/a.pem": "A", "ca/roots/b.pem": "B", "tokens/x.json": "X"} {
			if err := s.Put(ctx, k, []byte(v)); err != nil {
				t.Fatalf("Put %s: %v", k, err)
			}
		}
		if err := s.Put(ctx, "ca/roots/a.pem", []byte("A2")); err != nil {
			t.Fatal(err)
		}
		if got, err := s.Get(ctx, "ca/roots/a.pem"); err != nil || string(got) != "A2" {
			t.Fatalf("Get after overwrite = %q, %v", got, err)
		}
		list, err := s.List(ctx, "ca/roots/")
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]byte{"ca/roots/a.pem": []byte("A2"), "ca/roots/b.pem": []byte("B")}
		if !maps.EqualFunc(list, want, bytes.Equal) {
			t.Fatalf("List = %q, want %q", list, want)
		}
		if err := s.Delete(ctx, "ca/roots/b.pem"); err != nil {
			t.Fatal(err)
		}
		if err := s.Delete(ctx, "ca/roots/b.pem"); err != nil {
			t.Fatalf("Delete twice: %v", err)
		}
		if _, err := s.Get(ctx, "ca/roots/b.pem"); !errors.Is(err, state.ErrNotFound) {
			t.Fatalf("Get deleted = %v", err)
		}
		if err := s.Put(ctx, "../escape", nil); err == nil {
			t.Error("Put with a bad key succeeded")
		}
	})

	t.Run("encrypted at rest", func(t *testing.T) {
		secret := []byte("-----BEGIN PRIVATE KEY-----\nroot key material\n")
		if err := s.Put(ctx, "ca/roots/r.key", secret); err != nil {
			t.Fatal(err)
		}
		raw, _, err := agent.Client.KV().Get("meshgate/state/ca/roots/r.key", nil)
		if err != nil || raw == nil {
			t.Fatalf("raw KV read: %v %v", raw, err)
		}
		if bytes.Contains(raw.Value, []byte("root key material")) || bytes.Contains(raw.Value, []byte("PRIVATE KEY")) {
			t.Fatalf("the raw KV value holds the plaintext: %q", raw.Value)
		}
		// Two writes of one value differ (a fresh nonce each time).
		if err := s.Put(ctx, "ca/roots/r.key", secret); err != nil {
			t.Fatal(err)
		}
		raw2, _, _ := agent.Client.KV().Get("meshgate/state/ca/roots/r.key", nil)
		if bytes.Equal(raw.Value, raw2.Value) {
			t.Error("the same value sealed twice gives the same bytes")
		}
		// Another key does not open it.
		other := newConsulStore(t, agent.Client, "meshgate/state/", randomKey(t))
		if _, err := other.Get(ctx, "ca/roots/r.key"); err == nil {
			t.Error("a store with another key decrypted the value")
		}
		// A value moved to another key does not open there.
		if _, err := agent.Client.KV().Put(&api.KVPair{Key: "meshgate/state/ca/roots/moved.key", Value: raw2.Value}, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, "ca/roots/moved.key"); err == nil {
			t.Error("a sealed value copied to another key decrypted")
		}
		// A value written by hand is an error naming the key, in Get and List.
		if _, err := agent.Client.KV().Put(&api.KVPair{Key: "meshgate/state/tokens/hand.json", Value: []byte(`{"id":"x"}`)}, nil); err != nil {
			t.Fatal(err)
		}
		for name, op := range map[string]func() error{
			"Get":  func() error { _, err := s.Get(ctx, "tokens/hand.json"); return err },
			"List": func() error { _, err := s.List(ctx, "tokens/"); return err },
		} {
			if err := op(); err == nil || !bytes.Contains([]byte(err.Error()), []byte("meshgate/state/tokens/hand.json")) {
				t.Errorf("%s of a hand-written value = %v, want an error naming the key", name, err)
			}
		}
	})

	t.Run("compare and swap", func(t *testing.T) {
		ok, err := s.CompareAndSwap(ctx, "cas/v", nil, []byte("1"))
		if err != nil || !ok {
			t.Fatalf("create = %v, %v", ok, err)
		}
		if ok, err := s.CompareAndSwap(ctx, "cas/v", nil, []byte("x")); err != nil || ok {
			t.Fatalf("create over an existing key = %v, %v; want false", ok, err)
		}
		if ok, err := s.CompareAndSwap(ctx, "cas/v", []byte("0"), []byte("x")); err != nil || ok {
			t.Fatalf("swap from a stale value = %v, %v; want false", ok, err)
		}
		if ok, err := s.CompareAndSwap(ctx, "cas/v", []byte("1"), []byte("2")); err != nil || !ok {
			t.Fatalf("swap = %v, %v", ok, err)
		}
		if got, _ := s.Get(ctx, "cas/v"); string(got) != "2" {
			t.Fatalf("after swap = %q", got)
		}
	})
}

func TestConsulLock(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	ctx := context.Background()
	key := randomKey(t)
	a := newConsulStore(t, agent.Client, "meshgate/state/", key)
	b := newConsulStore(t, agent.Client, "meshgate/state/", key)

	// Several holders over two store values: never two inside at once. (A
	// contender that loses an acquire race may sleep Consul's lock retry
	// time, 5s: locks are for rare operations.)
	var inside, maxInside atomic.Int32
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for i := range 4 {
		s := a
		if i%2 == 1 {
			s = b
		}
		wg.Go(func() {
			held, release, err := s.Lock(ctx, "ca")
			if err != nil {
				errs <- err
				return
			}
			defer release()
			n := inside.Add(1)
			for {
				m := maxInside.Load()
				if n <= m || maxInside.CompareAndSwap(m, n) {
					break
				}
			}
			// Hold it across a store round trip.
			if err := s.Put(held, "lock/probe", []byte{byte(i)}); err != nil {
				errs <- err
			}
			inside.Add(-1)
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if maxInside.Load() != 1 {
		t.Fatalf("%d holders inside the lock at once", maxInside.Load())
	}

	// A lock taken waits; the waiter gives up with its context.
	_, release, err := a.Lock(ctx, "busy")
	if err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	if _, _, err := b.Lock(short, "busy"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Lock of a held lock = %v, want the context's deadline", err)
	}
	release()
	release() // twice is harmless
	held, release2, err := b.Lock(ctx, "busy")
	if err != nil {
		t.Fatalf("Lock after release: %v", err)
	}
	release2()
	select {
	case <-held.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("held context not cancelled by release")
	}
	// Lock keys are not state keys.
	if all, err := a.List(ctx, ""); err != nil {
		t.Fatal(err)
	} else {
		for k := range all {
			if filepath.Dir(k) == ".lock" {
				t.Errorf("List returned lock key %s", k)
			}
		}
	}
}

func TestConsulWatch(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s := newConsulStore(t, agent.Client, "meshgate/state/", randomKey(t))
	changes := make(chan struct{}, 16)
	done := make(chan error, 1)
	go func() { done <- s.Watch(ctx, "ca/", func() { changes <- struct{}{} }) }()

	// Writes under the prefix are seen; the watch may be established after
	// the first write, so write until one is.
	testutil.Eventually(t, 30*time.Second, "a write under the prefix reported", func() error {
		select {
		case <-changes:
			return nil
		default:
		}
		if err := s.Put(ctx, "ca/state.json", []byte("x")); err != nil {
			t.Fatal(err)
		}
		return errors.New("no change reported yet")
	})
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Watch returned %v, want context.Canceled", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Watch did not return after cancel")
	}
}

func TestParseKey(t *testing.T) {
	t.Parallel()
	raw := bytes.Repeat([]byte{0xab}, state.KeySize)
	tests := []struct {
		name string
		in   []byte
		ok   bool
	}{
		{"raw", raw, true},
		{"hex", []byte(hex.EncodeToString(raw) + "\n"), true},
		{"base64", []byte(base64.StdEncoding.EncodeToString(raw)), true},
		{"short", raw[:16], false},
		{"short hex", []byte(hex.EncodeToString(raw[:16])), false},
		{"text", []byte("correct horse battery staple"), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		k, err := state.ParseKey(tt.in)
		if (err == nil) != tt.ok {
			t.Errorf("%s: err = %v, want ok=%v", tt.name, err, tt.ok)
		}
		if tt.ok && !bytes.Equal(k, raw) {
			t.Errorf("%s: key = %x", tt.name, k)
		}
	}
	path := filepath.Join(t.TempDir(), "state.key")
	if err := os.WriteFile(path, []byte(hex.EncodeToString(raw)), 0o600); err != nil {
		t.Fatal(err)
	}
	if k, err := state.LoadKeyFile(path); err != nil || !bytes.Equal(k, raw) {
		t.Errorf("LoadKeyFile = %x, %v", k, err)
	}
	if _, err := state.NewConsul(&api.Client{}, "x/", raw[:10]); err == nil {
		t.Error("NewConsul accepted a short key")
	}
}
