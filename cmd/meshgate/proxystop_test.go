package main

import (
	"log/slog"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/meshgate/meshgate/dataplane"
)

func TestProxyLifecycleFlags(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name        string
		flags       proxyLifecycleFlags
		wantMaxConn int
		wantErr     string
	}{
		{name: "defaults", flags: proxyLifecycleFlags{drainDelay: dataplane.DefaultDrainDelay, drainTimeout: dataplane.DefaultDrainTimeout,
			maxConnections: dataplane.DefaultMaxConnections}, wantMaxConn: dataplane.DefaultMaxConnections},
		{name: "no delay, no limit", flags: proxyLifecycleFlags{drainTimeout: time.Second}, wantMaxConn: -1},
		{name: "negative delay", flags: proxyLifecycleFlags{drainDelay: -time.Second, drainTimeout: time.Second}, wantErr: "--drain-delay"},
		{name: "zero timeout", flags: proxyLifecycleFlags{maxConnections: 1}, wantErr: "--drain-timeout"},
		{name: "negative limit", flags: proxyLifecycleFlags{drainTimeout: time.Second, maxConnections: -1}, wantErr: "--max-connections"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := tt.flags.options()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("options() = %v; want an error naming %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.DrainDelay != tt.flags.drainDelay || got.DrainTimeout != tt.flags.drainTimeout || got.MaxConnections != tt.wantMaxConn {
				t.Errorf("options() = %+v, %v", got, err)
			}
		})
	}
}

// TestStopOnSecondSignal: the first signal starts the graceful stop (the
// command's context), the second one stops at once; a signal that came
// before the proxy listened counts as the first.
func TestStopOnSecondSignal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		seen     int // signals before listening
		signals  int
		wantStop bool
	}{
		{"one signal: graceful", 0, 1, false},
		{"two signals: now", 0, 2, true},
		{"one after an early one: now", 1, 1, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			signals := make(chan os.Signal, 2)
			done, stopped := make(chan struct{}), make(chan struct{})
			returned := make(chan struct{})
			go func() {
				defer close(returned)
				stopOnSecondSignal(signals, tt.seen, done, slog.New(slog.DiscardHandler), func() { close(stopped) })
			}()
			for range tt.signals {
				signals <- syscall.SIGTERM
			}
			if tt.wantStop {
				<-stopped
				<-returned
				return
			}
			close(done) // the proxy stopped gracefully
			<-returned
			select {
			case <-stopped:
				t.Error("stopped at once after a single signal")
			default:
			}
		})
	}
}
