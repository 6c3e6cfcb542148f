package h1server

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/internal/testutil"
)

// stateLog records the ConnState calls per connection as accepted.
type stateLog struct {
	mu     sync.Mutex
	states map[net.Conn][]http.ConnState
}

func (l *stateLog) hook(c net.Conn, s http.ConnState) {
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn() // a handed-over connection: down to the one accepted
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.states[c] = append(l.states[c], s)
}

// only returns the states of the one connection seen.
func (l *stateLog) only() ([]http.ConnState, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.states) != 1 {
		return nil, fmt.Errorf("%d connections seen", len(l.states))
	}
	for _, s := range l.states {
		return slices.Clone(s), nil
	}
	return nil, nil
}

// TestConnStateAsNetHTTP: the fast path calls Fallback.ConnState as
// net/http does (StateNew, StateActive per request, StateIdle after each
// response, StateClosed), so a hook sees the same states whichever server
// serves; a connection handed over is reported by net/http, as the
// connection accepted (NetConn).
func TestConnStateAsNetHTTP(t *testing.T) {
	t.Parallel()
	const get = "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
	const post = "POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi"
	tests := []struct {
		name     string
		requests []string
		want     []http.ConnState
	}{
		{"two requests", []string{get, get}, []http.ConnState{http.StateNew, http.StateActive, http.StateIdle, http.StateActive, http.StateIdle, http.StateClosed}},
		{"nothing sent", nil, []http.ConnState{http.StateNew, http.StateClosed}},
		{"handed over", []string{get, post}, []http.ConnState{http.StateNew, http.StateActive, http.StateIdle,
			http.StateNew, http.StateActive, http.StateIdle, http.StateClosed}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			for _, kind := range []string{"std", "fast"} {
				log := &stateLog{states: map[net.Conn][]http.ConnState{}}
				addr := serveWithConnState(t, kind, log.hook)
				c := dial(t, addr)
				br := bufio.NewReader(c)
				for _, req := range tt.requests {
					if _, err := io.WriteString(c, req); err != nil {
						t.Fatal(err)
					}
					readResponse(t, br, strings.Fields(req)[0])
				}
				c.Close()
				want := tt.want
				if kind == "std" && tt.name == "handed over" {
					want = slices.Delete(slices.Clone(want), 3, 4) // one server, one StateNew
				}
				testutil.Eventually(t, 30*time.Second, kind+": the states of the connection", func() error {
					got, err := log.only()
					if err == nil && !slices.Equal(got, want) {
						err = fmt.Errorf("states %v; want %v", got, want)
					}
					return err
				})
			}
		})
	}
}

// serveWithConnState serves hello with net/http (std) or the fast path,
// with hook as ConnState.
func serveWithConnState(t *testing.T, kind string, hook func(net.Conn, http.ConnState)) string {
	t.Helper()
	std := newStdServer(http.HandlerFunc(hello))
	std.ConnState = hook
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if kind == "std" {
		go func() { _ = std.Serve(ln) }()
		t.Cleanup(func() { _ = std.Close() })
	} else {
		srv := &Server{Fallback: std}
		go func() { _ = srv.Serve(ln) }()
		t.Cleanup(func() { _ = srv.Close() })
	}
	return ln.Addr().String()
}
