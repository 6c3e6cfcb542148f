package meshtls

import (
	"crypto/x509"
	"errors"
	"io"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

func TestRetireAt(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	// A one-minute certificate as the CA issues it: back-dated a minute.
	short := &x509.Certificate{NotBefore: t0.Add(-time.Minute), NotAfter: t0.Add(time.Minute)}
	day := &x509.Certificate{NotBefore: t0, NotAfter: t0.Add(24 * time.Hour)}
	tests := []struct {
		name  string
		certs []*x509.Certificate
		want  time.Time
	}{
		{"none", nil, time.Time{}},
		{"nil", []*x509.Certificate{nil}, time.Time{}},
		{"an eighth of the lifetime before expiry", []*x509.Certificate{day}, t0.Add(21 * time.Hour)},
		{"the earlier of two", []*x509.Certificate{day, short}, t0.Add(45 * time.Second)},
		{"nil ignored", []*x509.Certificate{nil, short}, t0.Add(45 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := RetireAt(tt.certs...); !got.Equal(tt.want) {
				t.Errorf("RetireAt = %v, want %v", got, tt.want)
			}
		})
	}
}

// TestExpiringConn: a connection is closed when its peer's certificate
// expires, not before; closed first, it leaves no timer behind.
func TestExpiringConn(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		local, remote := net.Pipe()
		c := NewExpiringConn(local)
		expires := time.Now().Add(time.Minute)
		c.Expire(expires, expires.Add(-10*time.Second))
		if got := c.RetireAt(); !got.Equal(expires.Add(-10 * time.Second)) {
			t.Errorf("RetireAt = %v", got)
		}
		readErr := make(chan error, 1)
		go func() {
			_, err := io.ReadAll(remote)
			readErr <- err
		}()
		time.Sleep(time.Minute - time.Millisecond)
		synctest.Wait()
		select {
		case err := <-readErr:
			t.Fatalf("connection ended before the certificate expired: %v", err)
		default:
		}
		time.Sleep(time.Millisecond)
		synctest.Wait()
		select {
		case err := <-readErr:
			if err != nil {
				t.Errorf("peer's read: %v, want EOF", err)
			}
		default:
			t.Fatal("connection still open after the certificate expired")
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("write after expiry: %v, want closed", err)
		}
	})
}

func TestExpiringConnExpiredAlready(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		local, remote := net.Pipe()
		defer remote.Close()
		c := NewExpiringConn(local)
		c.Expire(time.Now().Add(-time.Second), time.Now().Add(-time.Minute))
		synctest.Wait()
		if _, err := c.Write([]byte("x")); !errors.Is(err, io.ErrClosedPipe) {
			t.Errorf("write on a connection whose peer certificate had expired: %v, want closed", err)
		}
	})
}

func TestExpiringConnClosedFirst(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		local, remote := net.Pipe()
		defer remote.Close()
		c := NewExpiringConn(local)
		c.Expire(time.Now().Add(time.Hour), time.Now())
		if err := c.Close(); err != nil {
			t.Fatal(err)
		}
		c.Expire(time.Now().Add(time.Hour), time.Now()) // after Close: nothing armed
		c.mu.Lock()
		timer := c.timer
		c.mu.Unlock()
		if timer != nil {
			t.Error("a closed connection still has an expiry timer")
		}
	})
}
