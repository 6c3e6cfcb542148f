package testutil

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"testing/synctest"
	"time"
)

// fatalRecorder is a testing.TB whose Fatalf records the message.
type fatalRecorder struct {
	testing.TB
	fatal string
}

func (r *fatalRecorder) Fatalf(format string, args ...any) { r.fatal = fmt.Sprintf(format, args...) }

func TestEventually(t *testing.T) {
	t.Parallel()
	t.Run("returns once the condition holds", func(t *testing.T) {
		t.Parallel()
		calls := 0
		Eventually(t, time.Minute, "the third call", func() error {
			if calls++; calls < 3 {
				return fmt.Errorf("call %d", calls)
			}
			return nil
		})
		if calls != 3 {
			t.Fatalf("cond called %d times, want 3", calls)
		}
	})
	t.Run("fails with the last error", func(t *testing.T) {
		t.Parallel()
		synctest.Test(t, func(t *testing.T) {
			rec := &fatalRecorder{TB: t}
			calls := 0
			start := time.Now()
			Eventually(rec, time.Second, "never", func() error {
				calls++
				return fmt.Errorf("saw %d", calls)
			})
			if !strings.HasPrefix(rec.fatal, "never: not after 1s (") || !strings.HasSuffix(rec.fatal, fmt.Sprintf("last: saw %d", calls)) {
				t.Errorf("failure message %q", rec.fatal)
			}
			if waited := time.Since(start); waited < time.Second || waited > time.Second+maxPoll {
				t.Errorf("gave up after %v (virtual), want the 1s timeout", waited)
			}
		})
	})
	t.Run("Holds", func(t *testing.T) {
		t.Parallel()
		if err := Holds(func() bool { return true })(); err != nil {
			t.Errorf("true: %v", err)
		}
		if err := Holds(func() bool { return false })(); err == nil {
			t.Error("false: nil error")
		}
	})
}

// TestPipeListenerDeadlinesOnTheFakeClock: a server goroutine reading with a
// deadline over a PipeListener connection, in a bubble, times out at exactly
// its virtual deadline; a closed listener refuses dials.
func TestPipeListenerDeadlinesOnTheFakeClock(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		ln := NewPipeListener()
		served := make(chan time.Duration, 1)
		go func() {
			c, err := ln.Accept()
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			start := time.Now()
			_ = c.SetReadDeadline(start.Add(3 * time.Second))
			line, err := bufio.NewReader(c).ReadString('\n')
			if line != "hello\n" || err != nil {
				t.Errorf("read %q, %v", line, err)
			}
			_, err = c.Read(make([]byte, 1))
			if !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("second read: %v, want the deadline", err)
			}
			served <- time.Since(start)
		}()
		c, err := ln.Dial()
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, "hello\n"); err != nil {
			t.Fatal(err)
		}
		if got := <-served; got != 3*time.Second {
			t.Errorf("read timed out after %v, want exactly 3s", got)
		}
		ln.Close()
		if _, err := ln.Dial(); !errors.Is(err, ErrListenerClosed) {
			t.Errorf("Dial after Close: %v", err)
		}
		if _, err := ln.Accept(); err == nil {
			t.Error("Accept after Close succeeded")
		}
	})
}

// TestAllocated counts a known allocation.
func TestAllocated(t *testing.T) {
	var sink []byte
	got := Allocated(func() { sink = make([]byte, 1<<20) })
	if got.Bytes < 1<<20 || got.Objects < 1 {
		t.Errorf("Allocated = %+v, want at least one object of 1 MiB", got)
	}
	_ = sink
}
