//go:build !unix

package h1server

import (
	"net"
	"syscall"
)

// rawConnOf returns nil: outside Unix, a waiting connection reads one byte
// (awaitBytes).
func rawConnOf(net.Conn) syscall.RawConn { return nil }

// readRaw is not used outside Unix (rawConnOf returns nil).
func (c *conn) readRaw() error { panic("h1server: readRaw without a raw connection") }
