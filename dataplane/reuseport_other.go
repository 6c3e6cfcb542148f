//go:build !linux

package dataplane

import (
	"errors"
	"syscall"
)

// reusePortControl refuses: SO_REUSEPORT's load balancing among sockets is
// Linux's.
func reusePortControl(_, _ string, _ syscall.RawConn) error {
	return errors.New("reuse port: supported on Linux only")
}
