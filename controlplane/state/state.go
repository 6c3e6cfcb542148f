// Package state stores the control plane's own durable state (the CA roots,
// the join token registry, the admin token) behind a small key-value
// interface. Keys are slash-separated relative paths such as
// "ca/roots/<id>.pem". The file implementation keeps one file per key in the
// data directory; a replicated implementation (Consul KV) can take its place
// without its users changing.
package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
)

// ErrNotFound is returned (wrapped) by Get for a key that has no value.
var ErrNotFound = errors.New("state: key not found")

// Store is a key-value store for control-plane state. Implementations are
// safe for concurrent use.
type Store interface {
	// Get returns the value of key, or an error wrapping ErrNotFound.
	Get(ctx context.Context, key string) ([]byte, error)
	// Put sets the value of key atomically: a reader sees the old value or
	// the new one, never a part.
	Put(ctx context.Context, key string, value []byte) error
	// Delete removes key; deleting a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// List returns every key that starts with prefix, with its value.
	List(ctx context.Context, prefix string) (map[string][]byte, error)
}

// maxKeyLen bounds a key's length.
const maxKeyLen = 512

// ValidateKey reports whether key is a clean relative path: non-empty
// segments separated by "/", no "." or ".." segment, no segment starting
// with "." (reserved for temporary files), and only letters, digits and
// "-_.@" characters.
func ValidateKey(key string) error {
	if key == "" || len(key) > maxKeyLen {
		return fmt.Errorf("state: key %q: must be 1 to %d characters", key, maxKeyLen)
	}
	for _, seg := range strings.Split(key, "/") {
		if seg == "" {
			return fmt.Errorf("state: key %q: empty path segment", key)
		}
		if seg[0] == '.' {
			return fmt.Errorf("state: key %q: a segment may not start with '.'", key)
		}
		for i := 0; i < len(seg); i++ {
			c := seg[i]
			ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
				c == '-' || c == '_' || c == '.' || c == '@'
			if !ok {
				return fmt.Errorf("state: key %q: character %q not allowed", key, c)
			}
		}
	}
	return nil
}
