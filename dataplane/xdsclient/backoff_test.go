package xdsclient

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// retryLog records the "retry_in" of the client's reconnect logs and when
// (on the bubble's clock) each was logged.
type retryLog struct {
	mu      sync.Mutex
	at      []time.Time
	retryIn []time.Duration
}

func (l *retryLog) Enabled(context.Context, slog.Level) bool { return true }
func (l *retryLog) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *retryLog) WithGroup(string) slog.Handler            { return l }
func (l *retryLog) Handle(_ context.Context, r slog.Record) error {
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "retry_in" {
			l.mu.Lock()
			l.at = append(l.at, time.Now())
			l.retryIn = append(l.retryIn, a.Value.Duration())
			l.mu.Unlock()
		}
		return true
	})
	return nil
}

// TestReconnectBackoff: with no control plane to reach, the client retries
// after a delay drawn from [d/2, d], d doubling from BackoffInitial up to
// BackoffMax, and waits that long: on the bubble's fake clock, so the test
// takes no real time and does not depend on the machine's speed.
func TestReconnectBackoff(t *testing.T) {
	t.Parallel()
	// Port 0: no process can listen there, so a connection is refused at
	// once, whatever else runs on the machine.
	const deadAddr = "127.0.0.1:0"
	synctest.Test(t, func(t *testing.T) {
		const initial, maxDelay = time.Second, 8 * time.Second
		log := &retryLog{}
		c, err := New(Options{
			Node:           &corev3.Node{Id: nodeID},
			Addresses:      []string{deadAddr},
			Apply:          func(context.Context, string, []proto.Message, string) error { return nil },
			Logger:         slog.New(log),
			BackoffInitial: initial,
			BackoffMax:     maxDelay,
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() { done <- c.Run(ctx) }()
		time.Sleep(time.Minute)
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}

		log.mu.Lock()
		defer log.mu.Unlock()
		if len(log.retryIn) < 8 {
			t.Fatalf("%d reconnections in a minute, want at least 8 (delays %v)", len(log.retryIn), log.retryIn)
		}
		d := initial
		for i, wait := range log.retryIn {
			if wait < d/2 || wait > d {
				t.Errorf("retry %d after %v, want within [%v, %v]", i+1, wait, d/2, d)
			}
			if i+1 < len(log.at) {
				// The failed attempt itself takes no virtual time, or
				// about none (a refused connection).
				if gap := log.at[i+1].Sub(log.at[i]); gap < wait || gap > wait+100*time.Millisecond {
					t.Errorf("retry %d came %v after the failure, want its delay %v", i+1, gap, wait)
				}
			}
			d = min(2*d, maxDelay)
		}
	})
}
