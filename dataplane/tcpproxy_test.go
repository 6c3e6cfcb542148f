package dataplane

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"testing/synctest"
	"time"
)

// TestL4ChainMatch: a connection's chain is chosen as Envoy's
// filter_chain_match does: by transport protocol, then server name
// (exact, longest wildcard, none).
func TestL4ChainMatch(t *testing.T) {
	t.Parallel()
	spec := &l4Spec{inspect: true, chains: []l4Chain{
		{name: "shop", transport: "tls", serverNames: []string{"shop.example.com"}},
		{name: "wild", transport: "tls", serverNames: []string{"*.example.com"}},
		{name: "deep", transport: "tls", serverNames: []string{"*.a.example.com"}},
		{name: "default", transport: "tls"},
		{name: "plain", transport: "raw_buffer"},
	}}
	for _, tt := range []struct{ transport, sni, want string }{
		{"tls", "shop.example.com", "shop"},
		{"tls", "SHOP.example.com.", "shop"},
		{"tls", "x.example.com", "wild"},
		{"tls", "x.a.example.com", "deep"},
		{"tls", "example.com", "default"},
		{"tls", "", "default"},
		{"raw_buffer", "", "plain"},
	} {
		i := spec.match(tt.transport, tt.sni)
		if i < 0 || spec.chains[i].name != tt.want {
			t.Errorf("match(%q, %q) = %d, want %s", tt.transport, tt.sni, i, tt.want)
		}
	}
	tlsOnly := &l4Spec{inspect: true, chains: []l4Chain{{name: "only", transport: "tls", serverNames: []string{"a.test"}}}}
	if i := tlsOnly.match("tls", "b.test"); i != -1 {
		t.Errorf("unknown SNI matched chain %d, want none", i)
	}
	if i := tlsOnly.match("raw_buffer", ""); i != -1 {
		t.Errorf("plaintext matched chain %d, want none", i)
	}
}

// TestInspectClientHello: the SNI of a ClientHello is read without
// answering it, and every byte read is returned for the upstream; a
// connection that does not start with a TLS record is raw_buffer.
func TestInspectClientHello(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name      string
		send      func(c net.Conn)
		transport string
		sni       string
	}{
		{"TLS with SNI", func(c net.Conn) {
			_ = tls.Client(c, &tls.Config{ServerName: "shop.test", InsecureSkipVerify: true}).Handshake()
		}, "tls", "shop.test"},
		{"plaintext", func(c net.Conn) { _, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n")) }, "raw_buffer", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			client, server := net.Pipe()
			defer client.Close()
			defer server.Close()
			_ = client.SetDeadline(time.Now().Add(time.Minute))
			go tt.send(client)
			transport, sni, read, err := inspectClientHello(server)
			if err != nil {
				t.Fatal(err)
			}
			if transport != tt.transport || sni != tt.sni || len(read) == 0 {
				t.Errorf("got %q, %q, %d bytes; want %q, %q and the bytes read", transport, sni, len(read), tt.transport, tt.sni)
			}
			if transport == "tls" && read[0] != 0x16 {
				t.Errorf("first byte read %#x, want the handshake record's", read[0])
			}
		})
	}
}

// TestPipeIdleTimeout: a proxied connection with no byte either way for
// the idle timeout is closed; bytes reset the clock.
func TestPipeIdleTimeout(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		client, down := net.Pipe()
		up, server := net.Pipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			pipe(down, up, time.Minute)
		}()
		go func() { _, _ = io.Copy(io.Discard, server) }()
		time.Sleep(50 * time.Second)
		if _, err := client.Write([]byte("x")); err != nil { // resets the clock
			t.Fatal(err)
		}
		time.Sleep(50 * time.Second)
		synctest.Wait()
		select {
		case <-done:
			t.Fatal("closed 50 s after the last byte, want 1 min")
		default:
		}
		time.Sleep(11 * time.Second)
		synctest.Wait()
		select {
		case <-done:
		default:
			t.Fatal("open 61 s after the last byte, want closed at 1 min")
		}
		_ = client.Close()
		_ = server.Close()
	})
}

// TestL4ServeAfterShutdown: a server shut down before its Serve started
// (the drain of a listener removed at once) returns from Serve instead of
// accepting forever on a listener nobody closes.
func TestL4ServeAfterShutdown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := newL4Server("l4", nil, slog.New(slog.DiscardHandler))
	if err := s.Shutdown(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		t.Fatalf("Serve after Shutdown = %v, want http.ErrServerClosed", err)
	}
}
