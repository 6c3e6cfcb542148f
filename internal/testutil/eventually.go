// Package testutil holds the few helpers meshgate's tests share: polling a
// condition until a deadline (Eventually), an in-memory network for tests
// that run in a testing/synctest bubble (PipeListener), and a count of the
// memory a function allocates (Allocated). It is imported by tests only.
//
// The rules these helpers serve: no sleep is a synchronisation (poll a
// condition, or in a synctest bubble wait for the goroutines to block), no
// unit test asserts a wall-clock bound (count operations or allocations
// instead; time budgets are measured by bench/), and a test that passes on
// an idle machine passes on a loaded one.
package testutil

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// Polling intervals of Eventually: the first retry is quick, later ones
// back off to maxPoll so that a long wait does not keep a core busy.
const (
	firstPoll = time.Millisecond
	maxPoll   = 25 * time.Millisecond
)

// Eventually calls cond until it returns nil, and fails the test (t.Fatalf)
// when timeout passes first, with what and cond's last error. cond is
// called at once, then at intervals from 1 ms growing to 25 ms.
//
// timeout bounds a failure, not a success: choose it generous (tens of
// seconds for anything that involves a network exchange), since a loaded
// machine under -race is ten times slower than an idle one, and a passing
// test does not wait for it. Call it from the test's goroutine; elsewhere
// (in a handler, say) use Poll and t.Error.
//
// In a testing/synctest bubble it polls on the bubble's fake clock.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	if err := Poll(timeout, cond); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// Poll is Eventually without a test: it returns nil once cond does, or an
// error with cond's last error when timeout passes first. It may be called
// from any goroutine.
func Poll(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	poll := firstPoll
	for tries := 1; ; tries++ {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s (%d tries); last: %w", timeout, tries, err)
		}
		time.Sleep(poll) // the polling interval, not a synchronisation
		poll = min(2*poll, maxPoll)
	}
}

// errNotYet is the error of a Holds condition that is false.
var errNotYet = errors.New("condition false")

// Holds adapts a boolean condition to Eventually; prefer a condition that
// returns an error saying what it saw, which the failure message shows.
func Holds(cond func() bool) func() error {
	return func() error {
		if cond() {
			return nil
		}
		return errNotYet
	}
}
