package h1server

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"testing/synctest"
	"time"

	"github.com/meshgate/meshgate/internal/testutil"
)

// The tests of the server's timers (header, idle and probe) run in a
// testing/synctest bubble over in-memory connections: the timeouts fire at
// exactly their virtual time, so the tests can say when a connection must
// close (not just "about then"), take no real time, and do not depend on
// how loaded the machine is.

// startFastInBubble is startFast over an in-memory listener, for a test in
// a bubble; dial it with dialPipe.
func startFastInBubble(t *testing.T, h http.Handler, configure func(*http.Server)) (*fastServer, *testutil.PipeListener) {
	t.Helper()
	// Registered first, run last: once the server is closed, its sweeper
	// stops at its next tick, which the bubble's clock must reach before
	// the test ends.
	t.Cleanup(func() { time.Sleep(2 * probeDelay) })
	ln := testutil.NewPipeListener()
	return serveFast(t, ln, h, configure), ln
}

// dialPipe connects to ln; the connection is closed when the test ends.
func dialPipe(t *testing.T, ln *testutil.PipeListener) net.Conn {
	t.Helper()
	c, err := ln.Dial()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// TestSlowlorisHeadTimesOut: a head that keeps dribbling in, each byte well
// within the header timeout of the previous one, is cut when the header
// timeout has passed since its start (the accept, on a new connection).
func TestSlowlorisHeadTimesOut(t *testing.T) {
	const headerTimeout = 200 * time.Millisecond
	const dribble = 30 * time.Millisecond // between bytes; not a divisor of the timeout
	for _, tt := range []struct {
		name  string
		first string // sent before the slow part
	}{
		{"first request", ""},
		{"after a request", "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				_, ln := startFastInBubble(t, http.HandlerFunc(hello), func(s *http.Server) { s.ReadHeaderTimeout = headerTimeout })
				c := dialPipe(t, ln)
				br := bufio.NewReader(c)
				if tt.first != "" {
					_, _ = io.WriteString(c, tt.first)
					readResponse(t, br, "GET")
				}
				start := time.Now()
				_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHo")
				closed := make(chan error, 1)
				go func() {
					_, err := br.ReadByte()
					closed <- err
				}()
				for range 20 {
					select {
					case err := <-closed:
						if err != io.EOF {
							t.Fatalf("read %v, want the connection closed", err)
						}
						if d := time.Since(start); d != headerTimeout {
							t.Fatalf("closed %v after the head started, want the header timeout %v", d, headerTimeout)
						}
						return
					case <-time.After(dribble):
						_, _ = io.WriteString(c, "s")
					}
				}
				t.Fatal("a slow head was not cut")
			})
		})
	}
}

// TestIdleTimeoutCloses: a keep-alive connection stays open while requests
// come less than IdleTimeout apart, and is closed IdleTimeout after the
// last response (up to the 1/16 that setIdleDeadline may close it early).
func TestIdleTimeoutCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const idle = 200 * time.Millisecond
		_, ln := startFastInBubble(t, http.HandlerFunc(hello), func(s *http.Server) { s.IdleTimeout = idle })
		c := dialPipe(t, ln)
		br := bufio.NewReader(c)
		for i := range 3 {
			if i > 0 {
				time.Sleep(idle - idle/8) // less than idle: kept
			}
			if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: a\r\n\r\n"); err != nil {
				t.Fatalf("request %d on a connection idle for less than IdleTimeout: %v", i, err)
			}
			readResponse(t, br, "GET")
		}
		start := time.Now()
		if _, err := br.ReadByte(); err != io.EOF {
			t.Fatalf("read %v, want EOF", err)
		}
		if d := time.Since(start); d < idle-idle/16 || d > idle {
			t.Fatalf("idle connection closed after %v, want %v (at most %v early)", d, idle, idle/16)
		}
	})
}

// TestSlowRequestClientStays: a slow request whose client stays gets its
// answer, on a connection that stays keep-alive, with its idle timeout
// still in force after the probe.
func TestSlowRequestClientStays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const idle = 300 * time.Millisecond
		ctxErr := make(chan error, 2)
		fs, ln := startFastInBubble(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				pollUntil(t, "the probe to start", func() bool { return probeRunning(w) })
				synctest.Wait() // the probe is blocked in its read
				ctxErr <- r.Context().Err()
			}
			hello(w, r)
		}), func(s *http.Server) { s.IdleTimeout = idle })
		c := dialPipe(t, ln)
		br := bufio.NewReader(c)
		for _, path := range []string{"/slow", "/fast", "/slow", "/fast"} {
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: a\r\n\r\n", path)
			resp, body := readResponse(t, br, "GET")
			if resp.StatusCode != 200 || body != "hello "+path || resp.Close {
				t.Fatalf("%s: %d %q close=%v", path, resp.StatusCode, body, resp.Close)
			}
		}
		for range 2 {
			if err := <-ctxErr; err != nil {
				t.Errorf("slow request's context ended: %v", err)
			}
		}
		// The idle deadline is back: the connection is closed IdleTimeout
		// after the last response.
		start := time.Now()
		if _, err := br.ReadByte(); err == nil {
			t.Fatal("read a byte from an idle connection")
		}
		if d := time.Since(start); d < idle-idle/16 || d > idle {
			t.Errorf("idle connection closed after %v, want %v", d, idle)
		}
		if fs.fast.Load() != 4 {
			t.Errorf("fast path served %d requests, want 4", fs.fast.Load())
		}
	})
}

// TestPipelinedAfterHeaderDeadline: a request pipelined during a slow
// handler that outlasts the header deadline set before it is still read,
// under a fresh header deadline, which is in force.
func TestPipelinedAfterHeaderDeadline(t *testing.T) {
	for _, tt := range []struct {
		name  string
		pause time.Duration // before the rest of the pipelined head
		want  string        // "" when the connection must be closed
	}{
		{"rest within the header timeout", 150 * time.Millisecond, "hello /next"},
		{"rest after the header timeout", 250 * time.Millisecond, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				const headerTimeout = 200 * time.Millisecond
				started := make(chan struct{}, 1)
				_, ln := startFastInBubble(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/slow" {
						started <- struct{}{}
						pollUntil(t, "the probe to read the pipelined byte", func() bool { return probedByte(w) })
						time.Sleep(2 * headerTimeout) // the first head's deadline passes
					}
					hello(w, r)
				}), func(s *http.Server) { s.ReadHeaderTimeout = headerTimeout })
				c := dialPipe(t, ln)
				br := bufio.NewReader(c)
				_, _ = io.WriteString(c, "GET /slow HTTP/1.1\r\nHost: a\r\n\r\n")
				<-started
				_, _ = io.WriteString(c, "G")
				if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != "hello /slow" || resp.Close {
					t.Fatalf("/slow: %d %q close=%v", resp.StatusCode, body, resp.Close)
				}
				time.Sleep(tt.pause)
				_, werr := io.WriteString(c, "ET /next HTTP/1.1\r\nHost: a\r\n\r\n")
				if tt.want == "" {
					if _, err := br.ReadByte(); werr == nil && !errors.Is(err, io.EOF) {
						t.Fatalf("write %v, read %v; want the connection closed by the header timeout", werr, err)
					}
					return
				}
				if resp, body := readResponse(t, br, "GET"); resp.StatusCode != 200 || body != tt.want || resp.Close {
					t.Fatalf("/next: %d %q close=%v", resp.StatusCode, body, resp.Close)
				}
			})
		})
	}
}
