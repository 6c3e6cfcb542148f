package h1server

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"testing"
)

// BenchmarkServer measures one keep-alive request and its tiny response
// over loopback, net/http's server (alone, and behind the framing guard as
// --http1-server std runs it) against the fast path (the client is a raw
// connection reading a response of known length; its cost is the same for
// all).
func BenchmarkServer(b *testing.B) {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"text/plain; charset=utf-8"}
		h["Content-Length"] = []string{"13"}
		w.WriteHeader(http.StatusOK)
		_, _ = io.WriteString(w, "hello, world\n")
	})
	for _, kind := range []string{"std", "guarded", "fast"} {
		b.Run(kind, func(b *testing.B) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			std := newStdServer(handler)
			switch kind {
			case "std":
				go func() { _ = std.Serve(ln) }()
				defer std.Close()
			case "guarded":
				srv := &Guarded{Server: std}
				go func() { _ = srv.Serve(ln) }()
				defer srv.Close()
			default:
				srv := &Server{Fallback: std}
				go func() { _ = srv.Serve(ln) }()
				defer srv.Close()
			}
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := []byte("GET /tiny HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
			br := bufio.NewReader(c)
			if _, err := c.Write(req); err != nil {
				b.Fatal(err)
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				b.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// Every response has the length of the first (fixed-width Date).
			n := 0
			for k, vv := range resp.Header {
				for _, v := range vv {
					n += len(k) + 2 + len(v) + 2
				}
			}
			n += len("HTTP/1.1 200 OK\r\n") + 2 + 13
			buf := make([]byte, n)
			b.ReportAllocs()
			b.ResetTimer()
			for b.Loop() {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(br, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkStrictLines measures the fast path's line check of a typical
// request head.
func BenchmarkStrictLines(b *testing.B) {
	head := []byte(benchHead)
	b.SetBytes(int64(len(head)))
	b.ReportAllocs()
	for b.Loop() {
		if !strictLines(head) {
			b.Fatal("refused")
		}
	}
}
