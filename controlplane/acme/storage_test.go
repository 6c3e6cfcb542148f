package acme

import (
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"slices"
	"testing"
	"time"

	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/controlplane/state/consultest"
)

// storageContract checks what certmagic relies on of a Storage: Load of a
// missing key is fs.ErrNotExist; Store, Load, Exists, Stat; List of a
// directory, recursive or not; Delete of a key and of a directory;
// certmagic's keys with characters a state key may not hold (a
// wildcard's, a port's colon) map to keys that are stored.
func storageContract(t *testing.T, s *Storage) {
	t.Helper()
	ctx := context.Background()
	if _, err := s.Load(ctx, "certificates/ca/x/x.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load missing = %v, want fs.ErrNotExist", err)
	}
	if _, err := s.Stat(ctx, "certificates/ca/x/x.crt"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Stat missing = %v, want fs.ErrNotExist", err)
	}
	files := map[string]string{
		"certificates/127.0.0.1:14000-dir/shop.example.com/shop.example.com.crt": "CRT",
		"certificates/127.0.0.1:14000-dir/shop.example.com/shop.example.com.key": "KEY",
		"certificates/127.0.0.1:14000-dir/*.example.org/*.example.org.crt":       "WILD",
		"accounts/ca/ops.key": "ACCOUNT",
	}
	for k, v := range files {
		if err := s.Store(ctx, k, []byte(v)); err != nil {
			t.Fatalf("Store %s: %v", k, err)
		}
	}
	for k, v := range files {
		got, err := s.Load(ctx, k)
		if err != nil || string(got) != v {
			t.Fatalf("Load %s = %q, %v; want %q", k, got, err, v)
		}
		if !s.Exists(ctx, k) {
			t.Errorf("Exists %s = false", k)
		}
		info, err := s.Stat(ctx, k)
		if err != nil || !info.IsTerminal || info.Size != int64(len(v)) || info.Key != k {
			t.Errorf("Stat %s = %+v, %v", k, info, err)
		}
	}
	if info, err := s.Stat(ctx, "certificates"); err != nil || info.IsTerminal {
		t.Errorf("Stat of a directory = %+v, %v; want a non-terminal key", info, err)
	}
	top, err := s.List(ctx, "certificates", false)
	if err != nil || !slices.Equal(top, []string{"certificates/127.0.0.1_14000-dir"}) {
		t.Errorf("List certificates = %v, %v", top, err)
	}
	all, err := s.List(ctx, "certificates/127.0.0.1:14000-dir", true)
	if err != nil || len(all) != 3 {
		t.Errorf("List recursive = %v, %v; want 3 keys", all, err)
	}
	if err := s.Delete(ctx, "certificates/127.0.0.1:14000-dir/shop.example.com"); err != nil {
		t.Fatal(err)
	}
	if s.Exists(ctx, "certificates/127.0.0.1:14000-dir/shop.example.com/shop.example.com.crt") {
		t.Error("a key under a deleted directory exists")
	}
	if got, err := s.Load(ctx, "certificates/127.0.0.1:14000-dir/*.example.org/*.example.org.crt"); err != nil || string(got) != "WILD" {
		t.Errorf("a key beside the deleted directory: %q, %v", got, err)
	}
}

// lockExclusive checks that a lock held through a is waited for through
// b, and obtained once a releases it; a Lock whose ctx ends first fails.
func lockExclusive(t *testing.T, a, b *Storage) {
	t.Helper()
	ctx := context.Background()
	if err := a.Lock(ctx, "issue_cert_shop.example.com"); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if err := b.Lock(short, "issue_cert_shop.example.com"); err == nil {
		t.Fatal("a lock held was obtained again")
	}
	done := make(chan error, 1)
	go func() { done <- b.Lock(ctx, "issue_cert_shop.example.com") }()
	if err := a.Unlock(ctx, "issue_cert_shop.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Lock after the release: %v", err)
	}
	if err := b.Unlock(ctx, "issue_cert_shop.example.com"); err != nil {
		t.Fatal(err)
	}
	if err := b.Unlock(ctx, "issue_cert_shop.example.com"); err == nil {
		t.Error("Unlock of a lock not held succeeded")
	}
}

func TestStorageFile(t *testing.T) {
	t.Parallel()
	fs, err := state.OpenFile(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := NewStorage(fs)
	storageContract(t, s)
	lockExclusive(t, s, s)
}

func TestStorageMemory(t *testing.T) {
	t.Parallel()
	s := NewStorage(state.NewMemory())
	storageContract(t, s)
	lockExclusive(t, s, s)
}

// TestStorageConsul: in Consul KV (encrypted, as the state is), with
// Consul session locks shared by two control planes.
func TestStorageConsul(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	key := make([]byte, state.KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	open := func() *Storage {
		c, err := state.NewConsul(agent.Client, "meshgate/state", key)
		if err != nil {
			t.Fatal(err)
		}
		return NewStorage(c)
	}
	a, b := open(), open()
	storageContract(t, a)
	lockExclusive(t, a, b)
}
