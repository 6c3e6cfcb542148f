package httpproxy

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

// TestDrainTunnels: a graceful stop waits for the WebSockets in progress
// until its timeout: one that ends before is not cut; one still open at
// the timeout is closed, both its connections, and a WebSocket opening
// after that is closed at once (virtual time: testing/synctest).
func TestDrainTunnels(t *testing.T) {
	const drain = 20 * time.Second
	tests := []struct {
		name string
		// closeAfter: the client closes its side after this long; zero:
		// never (it keeps talking).
		closeAfter time.Duration
		wantReturn time.Duration // when DrainTunnels returns
		wantClosed int
	}{
		{name: "ends within the drain", closeAfter: 5 * time.Second, wantReturn: 5 * time.Second, wantClosed: 0},
		{name: "still open at the timeout", wantReturn: drain, wantClosed: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				h := NewHandler(nil)
				client, down := net.Pipe()
				up, backend := net.Pipe()
				go func() { _, _ = io.Copy(backend, backend) }() // an echo backend
				go func() { _, _ = io.Copy(io.Discard, client) }()
				tun := &tunnel{idle: time.Hour}
				spliced := make(chan struct{})
				go func() {
					defer close(spliced)
					tun.splice(h, &tunnelEnd{conn: down, r: down}, &tunnelEnd{conn: up, r: up})
				}()
				writer := make(chan struct{})
				go func() {
					defer close(writer)
					// A minute at most: a drain that does not close
					// the tunnel fails the test rather than hanging it.
					for i := 0; i < 60; i++ {
						if tc.closeAfter > 0 && time.Duration(i)*time.Second >= tc.closeAfter {
							break
						}
						if _, err := client.Write([]byte{1}); err != nil {
							return
						}
						time.Sleep(time.Second)
					}
					_ = client.Close()
				}()
				synctest.Wait()

				start := time.Now()
				ctx, cancel := context.WithTimeout(context.Background(), drain)
				defer cancel()
				closed := h.DrainTunnels(ctx)
				if got := time.Since(start); got != tc.wantReturn || closed != tc.wantClosed {
					t.Errorf("DrainTunnels returned %d after %v, want %d after %v", closed, got, tc.wantClosed, tc.wantReturn)
				}
				<-spliced
				_ = backend.Close()
				_ = client.Close()
				<-writer

				// After a drain that gave up, a new WebSocket closes at once.
				if tc.wantClosed > 0 {
					c2, d2 := net.Pipe()
					u2, b2 := net.Pipe()
					(&tunnel{idle: time.Hour}).splice(h, &tunnelEnd{conn: d2, r: d2}, &tunnelEnd{conn: u2, r: u2})
					if _, err := c2.Write([]byte{1}); !errors.Is(err, io.ErrClosedPipe) {
						t.Errorf("a WebSocket after the drain: write %v, want the pipe closed", err)
					}
					_ = b2.Close()
				}
			})
		})
	}
}
