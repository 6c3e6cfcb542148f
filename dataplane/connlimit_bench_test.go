package dataplane

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"testing"
)

// stubConn is a connection for the limiter alone: it is never read,
// written or closed.
type stubConn struct{ net.Conn }

func newTestLimiter(limit int) *connLimiter {
	return newConnLimiter(nil, "test", limit, &connCounters{relief: newMemoryRelief()}, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

// admitN admits n connections into l, idle (as accepted).
func admitN(tb testing.TB, l *connLimiter, n int) []*limitedConn {
	tb.Helper()
	conns := make([]*limitedConn, n)
	for i := range conns {
		lc, victim := l.admit(stubConn{})
		if lc == nil || victim != nil {
			tb.Fatalf("admission %d of %d: admitted %v, victim %v", i, n, lc != nil, victim != nil)
		}
		conns[i] = lc
	}
	return conns
}

// BenchmarkConnStateHook: the per-request ConnState hook calls (Active,
// then Idle) on many connections of one listener, each goroutine on its
// own connections; with the default limit, and with none (no idle order
// kept).
func BenchmarkConnStateHook(b *testing.B) {
	const conns = 1024
	for _, tt := range []struct {
		name  string
		limit int
	}{{"limit", DefaultMaxConnections}, {"no limit", -1}} {
		b.Run(tt.name, func(b *testing.B) {
			l := newTestLimiter(tt.limit)
			all := admitN(b, l, conns)
			var next atomic.Int64
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(next.Add(1)) * 7
				for pb.Next() {
					c := all[i%conns]
					l.connState(c, http.StateActive)
					l.connState(c, http.StateIdle)
					i++
				}
			})
		})
	}
}

// BenchmarkAdmitAtLimit: admissions to a listener at its limit: every
// connection idle (each admission reclaims the longest idle), every other
// one busy, or every one busy (each admission is shed).
func BenchmarkAdmitAtLimit(b *testing.B) {
	for _, n := range []int{1024, DefaultMaxConnections} {
		for _, tt := range []struct {
			name string
			busy func(i int) bool
		}{
			{"all idle", func(int) bool { return false }},
			{"half busy", func(i int) bool { return i%2 == 0 }},
			{"all busy", func(int) bool { return true }},
		} {
			b.Run(fmt.Sprintf("%s/%d", tt.name, n), func(b *testing.B) {
				l := newTestLimiter(n)
				for i, c := range admitN(b, l, n) {
					if tt.busy(i) {
						l.connState(c, http.StateActive)
					}
				}
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					l.admit(stubConn{})
				}
			})
		}
	}
}
