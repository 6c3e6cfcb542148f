package acme

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/meshgate/meshgate/controlplane/state"
)

// storagePrefix is where, in the control plane's state, the ACME
// certificates, keys and accounts are.
const storagePrefix = "acme/"

// Storage is a certmagic.Storage in the control plane's state store: files
// under <data dir>/acme/, or Consul KV (encrypted, as every value of the
// state) under <prefix>/acme/ when the state is in Consul, shared by every
// replica. Locks are Consul session locks when the store has them
// (state.Locker), else held in this process (a data directory has one
// control plane).
type Storage struct {
	store state.Store
	mu    sync.Mutex
	// held are the locks held, with their release.
	held map[string]func()
	// local are this process's locks (stores without state.Locker).
	local map[string]chan struct{}
}

var _ certmagic.Storage = (*Storage)(nil)

// NewStorage is the certmagic storage of store.
func NewStorage(store state.Store) *Storage {
	return &Storage{store: store, held: map[string]func(){}, local: map[string]chan struct{}{}}
}

// stateKey maps a certmagic key to a state key: under storagePrefix, each
// character a state key may not hold replaced by '_' (certmagic's keys
// are already safe but for a few: a wildcard's '*', a port's ':').
func stateKey(key string) string {
	var b strings.Builder
	b.WriteString(storagePrefix)
	for _, seg := range strings.Split(strings.Trim(key, "/"), "/") {
		if b.Len() > len(storagePrefix) {
			b.WriteByte('/')
		}
		for i, c := range []byte(seg) {
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '@' || (c == '.' && i > 0)
			if !ok {
				c = '_'
			}
			b.WriteByte(c)
		}
	}
	return b.String()
}

// Store implements certmagic.Storage.
func (s *Storage) Store(ctx context.Context, key string, value []byte) error {
	return s.store.Put(ctx, stateKey(key), value)
}

// Load implements certmagic.Storage: fs.ErrNotExist for a missing key.
func (s *Storage) Load(ctx context.Context, key string) ([]byte, error) {
	v, err := s.store.Get(ctx, stateKey(key))
	if errors.Is(err, state.ErrNotFound) {
		return nil, fmt.Errorf("acme storage: %s: %w", key, fs.ErrNotExist)
	}
	return v, err
}

// Delete implements certmagic.Storage: the key and every key under it.
func (s *Storage) Delete(ctx context.Context, key string) error {
	k := stateKey(key)
	under, err := s.store.List(ctx, k+"/")
	if err != nil {
		return err
	}
	for sub := range under {
		if err := s.store.Delete(ctx, sub); err != nil {
			return err
		}
	}
	return s.store.Delete(ctx, k)
}

// Exists implements certmagic.Storage.
func (s *Storage) Exists(ctx context.Context, key string) bool {
	if _, err := s.store.Get(ctx, stateKey(key)); err == nil {
		return true
	}
	under, err := s.store.List(ctx, stateKey(key)+"/")
	return err == nil && len(under) > 0
}

// List implements certmagic.Storage: the keys under path, every one
// (recursive) or its direct children (files and directories).
func (s *Storage) List(ctx context.Context, path string, recursive bool) ([]string, error) {
	base := stateKey(path)
	all, err := s.store.List(ctx, base+"/")
	if err != nil {
		return nil, err
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("acme storage: %s: %w", path, fs.ErrNotExist)
	}
	prefix := strings.TrimSuffix(strings.Trim(path, "/"), "/")
	seen := map[string]bool{}
	for k := range all {
		rest := strings.TrimPrefix(k, base+"/")
		if !recursive {
			rest, _, _ = strings.Cut(rest, "/")
		}
		seen[prefix+"/"+rest] = true
	}
	return slices.Sorted(maps.Keys(seen)), nil
}

// Stat implements certmagic.Storage. The state keeps no modification
// times: a key is reported as modified now (so never stale).
func (s *Storage) Stat(ctx context.Context, key string) (certmagic.KeyInfo, error) {
	if under, err := s.store.List(ctx, stateKey(key)+"/"); err == nil && len(under) > 0 {
		return certmagic.KeyInfo{Key: key, Modified: time.Now(), IsTerminal: false}, nil
	}
	v, err := s.store.Get(ctx, stateKey(key))
	if errors.Is(err, state.ErrNotFound) {
		return certmagic.KeyInfo{}, fmt.Errorf("acme storage: %s: %w", key, fs.ErrNotExist)
	}
	if err != nil {
		return certmagic.KeyInfo{}, err
	}
	return certmagic.KeyInfo{Key: key, Modified: time.Now(), Size: int64(len(v)), IsTerminal: true}, nil
}

// Lock implements certmagic.Locker: a Consul session lock when the state
// is in Consul (every replica sees it), else a lock of this process.
func (s *Storage) Lock(ctx context.Context, name string) error {
	key := strings.TrimPrefix(stateKey(name), storagePrefix)
	if l, ok := s.store.(state.Locker); ok {
		_, release, err := l.Lock(ctx, "acme-"+strings.ReplaceAll(key, "/", "-"))
		if err != nil {
			return err
		}
		s.mu.Lock()
		s.held[name] = release
		s.mu.Unlock()
		return nil
	}
	for {
		s.mu.Lock()
		ch, busy := s.local[name]
		if !busy {
			s.local[name] = make(chan struct{})
			s.mu.Unlock()
			return nil
		}
		s.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// Unlock implements certmagic.Locker.
func (s *Storage) Unlock(_ context.Context, name string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if release, ok := s.held[name]; ok {
		delete(s.held, name)
		release()
		return nil
	}
	if ch, ok := s.local[name]; ok {
		delete(s.local, name)
		close(ch)
		return nil
	}
	return fmt.Errorf("acme storage: unlock %s: not locked", name)
}
