package h1server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
)

// TestHijackedUpgrade: an upgrade request reaches a handler that can hijack
// the connection, on the fast path's Server and on Guarded alike; once the
// handler calls Upgraded on it, bytes that the framing guard would refuse in
// a request stream (a bare CR, a bare LF, a leading space: binary WebSocket
// frames) pass unchanged.
func TestHijackedUpgrade(t *testing.T) {
	t.Parallel()
	const payload = "\x81\x05a\rb\nc \x00\xff\r\r\n"
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "websocket" {
			http.Error(w, "want an upgrade", http.StatusBadRequest)
			return
		}
		w.Header().Set("Connection", "Upgrade")
		w.Header().Set("Upgrade", "websocket")
		w.WriteHeader(http.StatusSwitchingProtocols)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		u, ok := conn.(interface{ Upgraded() })
		if !ok {
			t.Errorf("the hijacked connection %T has no Upgraded", conn)
			return
		}
		u.Upgraded()
		if err := brw.Flush(); err != nil {
			return
		}
		buf := make([]byte, len(payload))
		if _, err := io.ReadFull(brw, buf); err != nil {
			t.Errorf("read after the upgrade: %v", err)
			return
		}
		_, _ = conn.Write(buf)
	})
	for _, kind := range []string{"fast", "guarded"} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var addr string
			if kind == "fast" {
				addr = serveFast(t, ln, echo, nil).addr
			} else {
				srv := &Guarded{Server: newStdServer(echo)}
				go func() { _ = srv.Serve(ln) }()
				t.Cleanup(func() { _ = srv.Close() })
				addr = ln.Addr().String()
			}
			c := dial(t, addr)
			if _, err := io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(c)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d, want 101", resp.StatusCode)
			}
			if _, err := io.WriteString(c, payload); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(payload))
			if _, err := io.ReadFull(br, got); err != nil {
				t.Fatalf("echo: %v", err)
			}
			if string(got) != payload {
				t.Fatalf("echo %q, want %q", got, payload)
			}
		})
	}
}
