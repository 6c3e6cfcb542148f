package backoff

import (
	"context"
	"math"
	"testing"
	"testing/synctest"
	"time"
)

func TestDelay(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		n    int
		want time.Duration
	}{
		{-1, 100 * time.Millisecond},
		{0, 100 * time.Millisecond},
		{1, 100 * time.Millisecond},
		{2, 200 * time.Millisecond},
		{3, 400 * time.Millisecond},
		{4, 800 * time.Millisecond},
		{5, time.Second},
		{64, time.Second},
		{math.MaxInt, time.Second},
	}
	for _, tt := range tests {
		if got := p.Delay(tt.n); got != tt.want {
			t.Errorf("Delay(%d) = %s, want %s", tt.n, got, tt.want)
		}
	}
	// A huge Max: the doubling stops before it overflows.
	huge := Policy{Initial: time.Hour, Max: math.MaxInt64}
	for n := 1; n < 100; n++ {
		if d := huge.Delay(n); d < huge.Delay(n-1) || d <= 0 {
			t.Fatalf("Delay(%d) = %s after %s", n, d, huge.Delay(n-1))
		}
	}
	if got := (Policy{Initial: time.Second, Max: time.Millisecond}).Delay(3); got != time.Second {
		t.Errorf("Max below Initial: Delay = %s, want Initial", got)
	}
}

// TestWaitBounds: every wait lies in [d/2, d], and both halves of the range
// are drawn (a count over many draws, not a timing).
func TestWaitBounds(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	for n := 1; n <= 6; n++ {
		d := p.Delay(n)
		var low, high int
		for range 2000 {
			w := p.Wait(n)
			if w < d/2 || w > d {
				t.Fatalf("Wait(%d) = %s, outside [%s, %s]", n, w, d/2, d)
			}
			if w < d*3/4 {
				low++
			} else {
				high++
			}
		}
		if low < 500 || high < 500 {
			t.Errorf("Wait(%d): %d draws in the lower quarter-range, %d in the upper: not uniform", n, low, high)
		}
	}
	if Jitter(0) != 0 || Jitter(-time.Second) != 0 {
		t.Error("Jitter of a non-positive delay is not 0")
	}
	for range 100 {
		if w := Jitter(1); w != 0 && w != 1 {
			t.Fatalf("Jitter(1) = %d", w)
		}
	}
}

func TestBackoffNextReset(t *testing.T) {
	b := New(10*time.Millisecond, 40*time.Millisecond)
	want := []time.Duration{10, 20, 40, 40}
	for i, d := range want {
		w := b.Next()
		if d *= time.Millisecond; w < d/2 || w > d {
			t.Fatalf("failure %d: wait %s, want in [%s, %s]", i+1, w, d/2, d)
		}
	}
	if b.Failures() != len(want) {
		t.Errorf("Failures() = %d, want %d", b.Failures(), len(want))
	}
	b.Reset()
	if w := b.Next(); w > 10*time.Millisecond || b.Failures() != 1 {
		t.Errorf("after Reset: wait %s, failures %d; want at most the initial delay, 1", w, b.Failures())
	}
}

// TestSleep: Sleep waits exactly d on the bubble's clock, and returns false
// at once when ctx ends first.
func TestSleep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		if !Sleep(t.Context(), 3*time.Second) || time.Since(start) != 3*time.Second {
			t.Fatalf("Sleep(3s) slept %s", time.Since(start))
		}
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		start = time.Now()
		if Sleep(ctx, time.Hour) || time.Since(start) != time.Second {
			t.Fatalf("Sleep with a context ending after 1s: slept %s", time.Since(start))
		}
		if Sleep(ctx, 0) {
			t.Fatal("Sleep(0) on a done context reported success")
		}
		if !Sleep(t.Context(), 0) {
			t.Fatal("Sleep(0) failed")
		}
	})
}
