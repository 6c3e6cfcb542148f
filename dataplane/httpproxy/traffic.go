package httpproxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// Limits of retries and mirrors (docs/traffic.md).
const (
	// ReplayBodyLimit is the largest request body kept to be sent again:
	// to a retry or a mirror. A request with a longer body is not retried
	// and not mirrored (Envoy's per-request buffer limit does the same).
	ReplayBodyLimit = 64 << 10
	// MaxMirrorsInFlight bounds the mirrored requests a listener has in
	// flight; a mirror beyond it is dropped, never queued.
	MaxMirrorsInFlight = 256
	// mirrorTimeout bounds a mirrored request when its route has no
	// timeout.
	mirrorTimeout = router.DefaultTimeout
	// drainLimit is how much of a retried response's body is read to keep
	// its connection; more, and the connection is closed instead.
	drainLimit = 64 << 10
)

// errRouteTimeout is the route timeout expiring between tries.
var errRouteTimeout = fmt.Errorf("%w: route timeout before the next try", upstream.ErrTimeout)

// sendTraffic sends out to endpoint of cluster with the route's retry
// policy and mirrors, as Envoy's router does: the mirrors get a copy (fire
// and forget), and a try that fails in a way the policy retries is tried
// again, after a backoff, on another endpoint when there is one, as long as
// tries and the route timeout last. A body is replayed from memory when it
// is at most ReplayBodyLimit; a longer one is sent once and not mirrored.
// timeout is the request's route timeout (Route.TimeoutOf). It returns the
// last try's response or error, its endpoint and the number of tries.
func (h *Handler) sendTraffic(out *http.Request, cfg *Config, rt *router.Route, cluster *upstream.Cluster, endpoint string, body *requestBody, timeout time.Duration) (*http.Response, string, int, error) {
	ctx := out.Context()
	var replay []byte
	replayable := true
	if body != nil {
		buf, err := readUpTo(body, ReplayBodyLimit)
		if err != nil {
			return nil, endpoint, 1, err
		}
		if len(buf) > ReplayBodyLimit {
			replayable = false
			out.Body = struct {
				io.Reader
				io.Closer
			}{io.MultiReader(bytes.NewReader(buf), body), body}
		} else {
			replay = buf
			out.Body = io.NopCloser(bytes.NewReader(replay))
		}
	}
	if replayable {
		for _, m := range rt.Mirrors() {
			if m.Mirrors(rand.Uint64()) {
				h.mirror(ctx, cfg, rt, m.Cluster, out, replay)
			}
		}
	}

	p := rt.Retry()
	retries := 0
	var perTry time.Duration
	if p != nil {
		perTry = p.PerTryTimeout
		if replayable && p.RetriesMethod(out.Method) {
			retries = p.Retries
		}
	}
	var deadline time.Time
	if timeout > 0 {
		deadline = time.Now().Add(timeout)
	}
	var tried []string
	breaker := cluster.Breaker() // counts active retries (max_retries, retry_budget)
	try := out
	for n := 0; ; n++ {
		timeout := perTry
		if !deadline.IsZero() {
			remaining := time.Until(deadline)
			if remaining <= 0 {
				return nil, endpoint, n + 1, errRouteTimeout
			}
			if timeout == 0 || remaining < timeout {
				timeout = remaining
			}
		}
		resp, err := cluster.RoundTrip(try, timeout)
		if n > 0 && breaker != nil {
			breaker.EndRetry()
		}
		if n >= retries || ctx.Err() != nil || !retried(p, resp, err) {
			return resp, endpoint, n + 1, err
		}
		if breaker != nil && breaker.StartRetry() != nil {
			// max_retries or the retry budget: no retry, this try's answer.
			return resp, endpoint, n + 1, err
		}
		if resp != nil {
			discard(resp)
		}
		if !sleep(ctx, p.Backoff(n+1, rand.Uint64()), deadline) {
			if breaker != nil {
				breaker.EndRetry()
			}
			if ctx.Err() != nil {
				return nil, endpoint, n + 1, ctx.Err()
			}
			return nil, endpoint, n + 1, errRouteTimeout
		}
		if p.OtherHost {
			tried = append(tried, endpoint)
		}
		next, ok := pickEndpoint(cluster, p, tried)
		if !ok {
			if breaker != nil {
				breaker.EndRetry()
			}
			return nil, endpoint, n + 1, errNoEndpoint
		}
		endpoint = next
		// A new request per try: the transport may still hold the last one.
		try = out.Clone(ctx)
		try.URL.Host = endpoint
		if rt.AttemptCountOnRequest() {
			try.Header[router.AttemptCountHeader] = attemptCount(n + 2)
		}
		if replay != nil {
			try.Body = io.NopCloser(bytes.NewReader(replay))
		}
	}
}

// errNoEndpoint: the cluster lost its endpoints between tries.
var errNoEndpoint = errors.New("no healthy upstream for the retry")

// retried reports whether the policy p retries a try that answered resp or
// failed with err.
func retried(p *router.RetryPolicy, resp *http.Response, err error) bool {
	if p == nil {
		return false
	}
	if err == nil {
		return p.RetriesStatus(resp.StatusCode)
	}
	var opErr *net.OpError
	if errors.As(err, &opErr) && opErr.Op == "dial" {
		return p.RetriesConnectFailure()
	}
	return p.RetriesReset()
}

// pickEndpoint picks the endpoint of the next try: with the previous_hosts
// predicate, one not in tried when one of p.HostSelectionAttempts picks
// gives one, else the last pick.
func pickEndpoint(cluster *upstream.Cluster, p *router.RetryPolicy, tried []string) (string, bool) {
	e, ok := cluster.Next()
	for i := 1; ok && p.OtherHost && i < p.HostSelectionAttempts+1 && slices.Contains(tried, e); i++ {
		e, ok = cluster.Next()
	}
	return e, ok
}

// sleep waits d, and reports false when ctx ends or the deadline (zero:
// none) comes first.
func sleep(ctx context.Context, d time.Duration, deadline time.Time) bool {
	if !deadline.IsZero() && time.Until(deadline) <= d {
		return false
	}
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// discard drops a retried response, reading a short body to the end so that
// its connection can be reused.
func discard(resp *http.Response) {
	_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
	_ = resp.Body.Close()
}

// readUpTo reads r until EOF or limit+1 bytes: more than limit bytes means
// the body is longer than the limit (and r has more).
func readUpTo(r io.Reader, limit int) ([]byte, error) {
	buf, err := io.ReadAll(io.LimitReader(r, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	return buf, nil
}

// mirror sends a copy of out (body: the replayable body) to an endpoint of
// the cluster named name, in the background, and ignores the answer. The
// copy's Host gets "-shadow" (before the port), as Envoy's does. A mirror
// whose cluster is unknown or has no endpoint, or that finds
// MaxMirrorsInFlight copies in flight, is dropped: it never delays nor
// changes the primary request.
func (h *Handler) mirror(ctx context.Context, cfg *Config, rt *router.Route, name string, out *http.Request, body []byte) {
	cluster := cfg.Clusters[name]
	if cluster == nil {
		return
	}
	endpoint, ok := cluster.Next()
	if !ok {
		return
	}
	select {
	case h.mirrorSlots <- struct{}{}:
	default:
		h.logger.Debug("mirror dropped: too many in flight", "cluster", name)
		return
	}
	timeout := rt.Timeout()
	if timeout <= 0 {
		timeout = mirrorTimeout
	}
	cp := out.Clone(context.WithoutCancel(ctx))
	cp.Host = shadowHost(out.Host)
	cp.URL.Host = endpoint
	cp.Body = nil
	if body != nil {
		cp.Body = io.NopCloser(bytes.NewReader(body))
	}
	go func() {
		defer func() { <-h.mirrorSlots }()
		resp, err := cluster.RoundTrip(cp, timeout)
		if err != nil {
			h.logger.Debug("mirror failed", "cluster", name, "endpoint", endpoint, "error", err)
			return
		}
		discard(resp)
	}()
}

// shadowHost is Envoy's shadow authority: host-shadow, or host-shadow:port.
func shadowHost(host string) string {
	if h, port, err := net.SplitHostPort(host); err == nil {
		if strings.IndexByte(h, ':') >= 0 {
			h = "[" + h + "]" // an IPv6 literal
		}
		return h + "-shadow:" + port
	}
	return host + "-shadow"
}

// attemptCount is the attempt count header's value for n tries.
func attemptCount(n int) []string { return []string{strconv.Itoa(n)} }
