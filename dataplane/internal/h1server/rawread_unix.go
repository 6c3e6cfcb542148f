//go:build unix

package h1server

import (
	"errors"
	"io"
	"net"
	"syscall"
)

// rawConnOf returns the raw connection of a plaintext TCP (or Unix)
// connection, nil for anything else.
func rawConnOf(c net.Conn) syscall.RawConn {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return nil
	}
	return raw
}

// readRaw waits until the connection is readable, under its read deadline,
// and reads what arrived into a pooled buffer (c.arrived): the buffer is
// taken only once bytes are there, so a waiting connection holds none. It is
// Go's own read loop (read; on EAGAIN wait for the poller; read again)
// with the buffer put back while waiting.
func (c *conn) readRaw() error {
	if c.rawRead == nil {
		c.rawRead = c.readRawStep
	}
	c.rawN, c.rawErr = 0, nil
	if err := c.raw.Read(c.rawRead); err != nil {
		c.releaseArrived()
		return err // closed, or the deadline passed
	}
	switch {
	case c.rawErr != nil:
		c.releaseArrived()
		return c.rawErr
	case c.rawN == 0:
		c.releaseArrived()
		return io.EOF
	}
	c.arrived = (*c.arrivedBuf)[:c.rawN]
	return nil
}

// readRawStep is one attempt of readRaw, called by RawConn.Read: false
// (nothing to read yet) makes it wait for the poller and call again.
func (c *conn) readRawStep(fd uintptr) bool {
	if c.arrivedBuf == nil {
		c.arrivedBuf = getArrived()
	}
	for {
		n, err := syscall.Read(int(fd), *c.arrivedBuf)
		switch {
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EAGAIN):
			c.releaseArrived()
			return false
		case err != nil:
			c.rawErr = err
		default:
			c.rawN = n
		}
		return true
	}
}
