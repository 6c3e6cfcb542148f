// Package consulbin finds the Consul agent binary that tests and benchmarks
// run (the one `make consul` builds from tools/consul).
package consulbin

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// ErrNotFound is returned by Find when no binary is found.
var ErrNotFound = errors.New("no consul binary")

// Find returns $MESHGATE_CONSUL_BIN, else tools/consul/bin/consul in the
// working directory or a parent (the repository), else consul on the PATH.
func Find() (string, error) {
	if p := os.Getenv("MESHGATE_CONSUL_BIN"); p != "" {
		return p, nil
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("consul binary: %w", err)
	}
	for {
		p := filepath.Join(dir, "tools", "consul", "bin", "consul")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	if p, err := exec.LookPath("consul"); err == nil {
		return p, nil
	}
	return "", ErrNotFound
}
