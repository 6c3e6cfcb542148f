package testutil

import (
	"context"
	"errors"
	"net"
	"sync"
)

// PipeListener is an in-memory net.Listener whose connections are net.Pipe
// pairs, for tests that run a server and its clients in a testing/synctest
// bubble: a goroutine blocked on a pipe is durably blocked in the bubble (one
// blocked on a socket is not, and would stop the bubble's fake clock), and a
// pipe's deadlines run on the fake clock, so read and idle timeouts fire at
// exactly their virtual time.
//
// Create it inside the bubble that uses it. A pipe is synchronous: a Write
// returns when the peer has read the bytes, or fails with
// io.ErrClosedPipe once the peer closed its end.
type PipeListener struct {
	conns  chan net.Conn
	closed chan struct{}
	once   sync.Once
}

// NewPipeListener returns a listener; close it when done.
func NewPipeListener() *PipeListener {
	return &PipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

// ErrListenerClosed is the error of a Dial to a closed PipeListener, as a
// connection refused.
var ErrListenerClosed = errors.New("pipe listener closed: connection refused")

// Accept waits for a Dial and returns the server's end of the pipe.
func (l *PipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

// Close stops Accept and refuses later dials; open connections stay.
func (l *PipeListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

// Addr is the listener's (placeholder) address.
func (l *PipeListener) Addr() net.Addr { return pipeAddr{} }

// Dial connects to the listener: it returns the client's end of a pipe
// once Accept took the server's.
func (l *PipeListener) Dial() (net.Conn, error) {
	return l.DialContext(context.Background(), "tcp", "pipe")
}

// DialContext is Dial with the signature of net.Dialer.DialContext (network
// and address are ignored), for http.Transport.DialContext and the like.
func (l *PipeListener) DialContext(ctx context.Context, _, _ string) (net.Conn, error) {
	server, client := net.Pipe()
	select {
	case l.conns <- server:
		return client, nil
	case <-l.closed:
		return nil, ErrListenerClosed
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }
