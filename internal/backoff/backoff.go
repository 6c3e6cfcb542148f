// Package backoff is meshgate's one retry delay. Every loop that retries
// after a failure waits by it: the xDS client's reconnects, a proxy's
// certificate requests and renewals, Consul discovery, the proxies' Consul
// registration, the Consul KV watches of policy and state, and the accept
// loops of the listeners. So they all back off alike, and the rule is
// tested once.
//
// The delay doubles with each failure in a row, from Policy.Initial up to
// Policy.Max, and each wait is drawn uniformly from [d/2, d] for the delay
// d ("equal jitter"): never longer than the delay, so Max is a true bound,
// never shorter than half of it, so a failing peer is not hammered, and
// spread enough that the many proxies or control planes that failed
// together (a control plane or Consul agent restarting) do not retry in
// step.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// maxShift bounds the doubling so that Initial<<shift cannot overflow
// before Max caps it.
const maxShift = 32

// Policy bounds the delays: Initial after the first failure, doubling, at
// most Max. A Max below Initial counts as Initial.
type Policy struct {
	Initial, Max time.Duration
}

// Delay is the delay after the n-th failure in a row (n >= 1; n < 1 counts
// as 1): Initial·2^(n-1), at most Max.
func (p Policy) Delay(n int) time.Duration {
	limit := max(p.Max, p.Initial)
	shift := min(max(n, 1)-1, maxShift)
	d := p.Initial << shift
	if d <= 0 || d > limit || d>>shift != p.Initial {
		return limit
	}
	return d
}

// Wait is the jittered wait after the n-th failure in a row: drawn
// uniformly from [Delay(n)/2, Delay(n)].
func (p Policy) Wait(n int) time.Duration { return Jitter(p.Delay(n)) }

// Jitter draws a wait uniformly from [d/2, d]; 0 for d <= 0.
func Jitter(d time.Duration) time.Duration {
	if d <= 0 {
		return 0
	}
	return d/2 + rand.N(d-d/2+1)
}

// Backoff counts the failures in a row of one retry loop. Its zero value
// needs a Policy; it is not safe for concurrent use.
type Backoff struct {
	Policy
	failures int
}

// New returns a Backoff with no failure yet.
func New(initial, maxDelay time.Duration) *Backoff {
	return &Backoff{Policy: Policy{Initial: initial, Max: maxDelay}}
}

// Next records a failure and returns the wait before the next attempt.
func (b *Backoff) Next() time.Duration {
	b.failures++
	return b.Wait(b.failures)
}

// Reset forgets the failures: after a success, the next failure waits
// about Initial again.
func (b *Backoff) Reset() { b.failures = 0 }

// Failures is the number of failures in a row so far.
func (b *Backoff) Failures() int { return b.failures }

// Sleep waits d, or until ctx is done; it reports whether d elapsed.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
