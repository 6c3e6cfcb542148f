package state

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/internal/backoff"
)

// KeySize is the length of the state encryption key: AES-256.
const KeySize = 32

// Locker is implemented by stores shared by several processes (Consul): a
// named lock that one holder at a time takes, across every replica. Users of
// a Store that may be shared (the CA) take it around read-modify-write
// sequences when the store offers it.
type Locker interface {
	// Lock blocks until the lock name is held or ctx is done. held is
	// cancelled when the lock is released or lost (the session expired):
	// do the protected writes with it. release lets the lock go; calling it
	// more than once is harmless.
	Lock(ctx context.Context, name string) (held context.Context, release func(), err error)
}

// ParseKey reads a state encryption key: 32 random bytes, or 64 hex digits,
// or the standard base64 of 32 bytes (surrounding white space ignored). 32
// printable characters are refused: that is a password, not a random key.
func ParseKey(b []byte) ([]byte, error) {
	if len(b) == KeySize && !printable(b) {
		return append([]byte(nil), b...), nil
	}
	text := strings.TrimSpace(string(b))
	if k, err := hex.DecodeString(text); err == nil && len(k) == KeySize {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(text); err == nil && len(k) == KeySize {
		return k, nil
	}
	return nil, fmt.Errorf("state: the key must be %d random bytes, raw, hex (openssl rand -hex 32) or base64", KeySize)
}

func printable(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// LoadKeyFile reads the state encryption key from path (--state-key-file).
func LoadKeyFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("state: read key file: %w", err)
	}
	k, err := ParseKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return k, nil
}

// Consul is a Store in Consul KV, shared by every control-plane replica that
// uses the same Consul datacenter, prefix and key. Each key is stored at
// prefix+key; its value is sealed with AES-256-GCM under the operator's key
// (a random nonce per value, the key name as additional data, so a value
// moved to another key does not open), so that nothing in KV, CA keys
// included, is readable without the key. Locks live under prefix+".lock/",
// a name no state key can take.
type Consul struct {
	client *api.Client
	prefix string
	aead   cipher.AEAD
}

// sealVersion is the first byte of every sealed value.
const sealVersion = 1

// lockDir is where Lock keeps its lock keys, under the prefix.
const lockDir = ".lock/"

// NewConsul returns a store under prefix (a trailing "/" is added when
// missing; "meshgate/state/" is the usual one) encrypting with key, which
// must be KeySize bytes.
func NewConsul(client *api.Client, prefix string, key []byte) (*Consul, error) {
	if client == nil {
		return nil, errors.New("state: no Consul client")
	}
	if len(key) != KeySize {
		return nil, fmt.Errorf("state: the encryption key is %d bytes, want %d", len(key), KeySize)
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if strings.HasPrefix(prefix, "/") {
		return nil, fmt.Errorf("state: Consul prefix %q must not start with '/'", prefix)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("state: encryption key: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("state: encryption key: %w", err)
	}
	return &Consul{client: client, prefix: prefix, aead: aead}, nil
}

// Prefix is the KV prefix the store lives under, ending with "/".
func (c *Consul) Prefix() string { return c.prefix }

func additionalData(key string) []byte { return []byte("meshgate-state:" + key) }

// seal encrypts value for key: version byte, nonce, ciphertext and tag.
func (c *Consul) seal(key string, value []byte) ([]byte, error) {
	ns := c.aead.NonceSize()
	out := make([]byte, 1+ns, 1+ns+len(value)+c.aead.Overhead())
	out[0] = sealVersion
	if _, err := rand.Read(out[1:]); err != nil {
		return nil, fmt.Errorf("state: nonce: %w", err)
	}
	return c.aead.Seal(out, out[1:], value, additionalData(key)), nil
}

// open decrypts what seal produced for key.
func (c *Consul) open(key string, sealed []byte) ([]byte, error) {
	ns := c.aead.NonceSize()
	if len(sealed) < 1+ns+c.aead.Overhead() || sealed[0] != sealVersion {
		return nil, fmt.Errorf("state: %s%s: not a sealed meshgate value (written by hand?)", c.prefix, key)
	}
	plain, err := c.aead.Open(nil, sealed[1:1+ns], sealed[1+ns:], additionalData(key))
	if err != nil {
		return nil, fmt.Errorf("state: %s%s: does not decrypt with the state key (another --state-key-file, or tampered with)", c.prefix, key)
	}
	return plain, nil
}

// Get implements Store.
func (c *Consul) Get(ctx context.Context, key string) ([]byte, error) {
	if err := ValidateKey(key); err != nil {
		return nil, err
	}
	pair, _, err := c.client.KV().Get(c.prefix+key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("state: get %s from Consul: %w", key, err)
	}
	if pair == nil {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, key)
	}
	return c.open(key, pair.Value)
}

// Put implements Store.
func (c *Consul) Put(ctx context.Context, key string, value []byte) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	sealed, err := c.seal(key, value)
	if err != nil {
		return err
	}
	if _, err := c.client.KV().Put(&api.KVPair{Key: c.prefix + key, Value: sealed}, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("state: put %s to Consul: %w", key, err)
	}
	return nil
}

// Delete implements Store.
func (c *Consul) Delete(ctx context.Context, key string) error {
	if err := ValidateKey(key); err != nil {
		return err
	}
	if _, err := c.client.KV().Delete(c.prefix+key, (&api.WriteOptions{}).WithContext(ctx)); err != nil {
		return fmt.Errorf("state: delete %s from Consul: %w", key, err)
	}
	return nil
}

// List implements Store. Keys under the prefix that are not valid state
// keys (locks, folders made by hand) are skipped; a value that does not
// decrypt is an error naming its key.
func (c *Consul) List(ctx context.Context, prefix string) (map[string][]byte, error) {
	pairs, _, err := c.client.KV().List(c.prefix+prefix, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("state: list %q in Consul: %w", prefix, err)
	}
	out := make(map[string][]byte, len(pairs))
	for _, p := range pairs {
		key := strings.TrimPrefix(p.Key, c.prefix)
		if ValidateKey(key) != nil {
			continue
		}
		v, err := c.open(key, p.Value)
		if err != nil {
			return nil, err
		}
		out[key] = v
	}
	return out, nil
}

// CompareAndSwap sets key to value only if it is unchanged since it was
// read: old is what Get returned (nil: the key must not exist). It reports
// whether the swap happened. Being a read then a check-and-set, it is for
// keys with one writer at a time per value, not a hot counter.
func (c *Consul) CompareAndSwap(ctx context.Context, key string, old, value []byte) (bool, error) {
	if err := ValidateKey(key); err != nil {
		return false, err
	}
	kv := c.client.KV()
	pair, _, err := kv.Get(c.prefix+key, (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("state: compare-and-swap %s: %w", key, err)
	}
	var index uint64
	switch {
	case pair == nil && old != nil:
		return false, nil
	case pair != nil:
		cur, err := c.open(key, pair.Value)
		if err != nil {
			return false, err
		}
		if old == nil || string(cur) != string(old) {
			return false, nil
		}
		index = pair.ModifyIndex
	}
	sealed, err := c.seal(key, value)
	if err != nil {
		return false, err
	}
	// Index 0 means "only if the key does not exist".
	ok, _, err := kv.CAS(&api.KVPair{Key: c.prefix + key, Value: sealed, ModifyIndex: index}, (&api.WriteOptions{}).WithContext(ctx))
	if err != nil {
		return false, fmt.Errorf("state: compare-and-swap %s: %w", key, err)
	}
	return ok, nil
}

// Lock implements Locker with a Consul session lock on
// prefix+".lock/"+name. The session is released (and the key's lock
// dropped) by release; should this process die, the session's TTL and the
// agent's health check free the lock for the others.
func (c *Consul) Lock(ctx context.Context, name string) (context.Context, func(), error) {
	if err := ValidateKey(name); err != nil {
		return nil, nil, err
	}
	lock, err := c.client.LockOpts(&api.LockOptions{
		Key:         c.prefix + lockDir + name,
		SessionName: "meshgate " + name,
		SessionTTL:  "15s",
		// The wait for a held lock is a blocking query that does not see
		// ctx: keep it short so that a cancelled Lock returns promptly.
		LockWaitTime: time.Second,
	})
	if err != nil {
		return nil, nil, fmt.Errorf("state: lock %s: %w", name, err)
	}
	lost, err := lock.Lock(ctx.Done())
	if err != nil {
		return nil, nil, fmt.Errorf("state: lock %s in Consul: %w", name, err)
	}
	if lost == nil { // ctx done before the lock was ours
		return nil, nil, fmt.Errorf("state: lock %s: %w", name, ctx.Err())
	}
	held, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-lost:
			cancel()
		case <-held.Done():
		}
	}()
	var once sync.Once
	release := func() {
		once.Do(func() {
			cancel()
			_ = lock.Unlock()
		})
	}
	return held, release, nil
}

// Watch calls changed after any write under prefix (relative to the
// store's prefix) until ctx is done, with Consul blocking queries.
func (c *Consul) Watch(ctx context.Context, prefix string, changed func()) error {
	return WatchKV(ctx, c.client.KV(), c.prefix+prefix, 0, changed)
}

// Watch backoff bounds.
const (
	watchWait       = 5 * time.Minute
	watchMinBackoff = 250 * time.Millisecond
	watchMaxBackoff = 30 * time.Second
)

// WatchKV calls changed each time Consul's index for the keys under prefix
// moves past the one seen before, until ctx is done (then it returns
// ctx.Err()). since is the index the caller's last read saw (0: take the
// first answer as the baseline, without calling changed). Errors (Consul
// unreachable) are retried with backoff (internal/backoff); changed is
// called once the watch recovers, as writes may have been missed.
func WatchKV(ctx context.Context, kv *api.KV, prefix string, since uint64, changed func()) error {
	index := since
	retry := backoff.New(watchMinBackoff, watchMaxBackoff)
	failed := false
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		_, meta, err := kv.Keys(prefix, "", (&api.QueryOptions{WaitIndex: index, WaitTime: watchWait}).WithContext(ctx))
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			failed = true
			if !backoff.Sleep(ctx, retry.Next()) {
				return ctx.Err()
			}
			continue
		}
		retry.Reset()
		next := meta.LastIndex
		switch {
		case next < index: // the index went backwards (snapshot restore): start over
			index = 0
			changed()
			continue
		case index != 0 && next > index, failed && index != 0:
			changed()
		}
		failed = false
		index = max(next, 1)
	}
}
