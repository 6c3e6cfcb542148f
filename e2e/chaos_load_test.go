package e2e

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// rateLoad sends GET url at a fixed rate over a fixed number of keep-alive
// connections, as fortio does: each connection has its share of the rate and
// at most one request in flight, and one that fell behind (a slow answer)
// catches up by sending at once. Each request has its own timeout; every
// outcome is recorded by the time it was sent. A machine too loaded for the
// rate lowers the rate achieved (reported), not the success of requests. It
// is the chaos scenarios' load generator; startLoad is the older tests'
// unpaced loop.
type rateLoad struct {
	path    string // the traffic path measured, for reports
	url     string
	rate    int
	conns   int
	timeout time.Duration
	check   loadCheck
	// The goal a chaos scenario holds the load to: at most maxFailed
	// failed requests (0 unless set), and when maxRecovery is set,
	// recovered within it.
	maxFailed   int64
	maxRecovery time.Duration
	client      *http.Client
	start       time.Time
	cancel      context.CancelFunc
	wg          sync.WaitGroup // the connections' senders
	once        sync.Once
	stopped     time.Time

	mu       sync.Mutex
	outcomes []loadOutcome
	failures map[string]int64 // failed requests by outcome
	samples  []string         // the first failures, in words
}

// loadCheck judges one answer: its outcome label ("200", "503",
// "upstream 503") and whether it counts as a success.
type loadCheck func(*response) (outcome string, ok bool)

// loadOutcome is one request: when it was sent (since the load started) and
// whether it succeeded.
type loadOutcome struct {
	at time.Duration
	ok bool
}

// statusOK accepts any 2xx answer.
func statusOK(r *response) (string, bool) {
	return strconv.Itoa(r.status), r.status >= 200 && r.status < 300
}

// loadConnections is how many connections carry a load of rate requests
// per second: one per 20 req/s, at least 4.
func loadConnections(rate int) int { return max(4, rate/20) }

// startRateLoad starts a load of rate requests per second on url; it is
// stopped at the end of the test at the latest.
func startRateLoad(t *testing.T, path, url string, rate int, timeout time.Duration, check loadCheck) *rateLoad {
	t.Helper()
	if rate <= 0 {
		t.Fatalf("load %s: rate %d, want > 0", path, rate)
	}
	ctx, cancel := context.WithCancel(context.Background())
	conns := loadConnections(rate)
	l := &rateLoad{
		path: path, url: url, rate: rate, conns: conns, timeout: timeout, check: check, cancel: cancel,
		failures: map[string]int64{},
		client: &http.Client{
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
			Transport:     &http.Transport{Proxy: nil, MaxIdleConnsPerHost: conns, DisableCompression: true},
		},
		start: time.Now(),
	}
	interval := time.Second / time.Duration(rate)
	for c := range conns {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			timer := time.NewTimer(time.Hour)
			defer timer.Stop()
			// Connection c sends requests c, c+conns, c+2·conns, ... of the
			// rate's schedule.
			for k := c; ; k += conns {
				if wait := time.Until(l.start.Add(time.Duration(k) * interval)); wait > 0 {
					timer.Reset(wait)
					select {
					case <-ctx.Done():
						return
					case <-timer.C:
					}
				}
				if ctx.Err() != nil {
					return
				}
				l.send(time.Since(l.start))
			}
		}()
	}
	t.Cleanup(l.stop)
	return l
}

// send makes one request, sent at offset at, and records its outcome. The
// request's context is its own: stopping the load lets requests in flight
// finish.
func (l *rateLoad) send(at time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	r, err := fetchResponse(ctx, l.client, l.url)
	var outcome, detail string
	ok := false
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (err != nil && ctx.Err() != nil):
		outcome, detail = "timeout", err.Error()
	case err != nil:
		outcome, detail = "error", err.Error()
	default:
		outcome, ok = l.check(r)
		detail = fmt.Sprintf("%s: %.200s", outcome, strings.TrimSpace(r.body))
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.outcomes = append(l.outcomes, loadOutcome{at: at, ok: ok})
	if !ok {
		l.failures[outcome]++
		if len(l.samples) < 5 {
			l.samples = append(l.samples, fmt.Sprintf("at %s: %s", at.Round(time.Millisecond), detail))
		}
	}
}

// fetchResponse sends GET url with ctx and reads the answer (at most 1 MiB).
func fetchResponse(ctx context.Context, c *http.Client, url string) (*response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	r := &response{status: resp.StatusCode, header: resp.Header, body: string(body)}
	_ = json.Unmarshal(body, &r.reply)
	return r, nil
}

// stop ends the load: no new request is sent, the ones in flight finish
// (each within its timeout).
func (l *rateLoad) stop() {
	l.once.Do(func() {
		l.cancel()
		l.wg.Wait()
		l.stopped = time.Now()
		l.client.CloseIdleConnections()
	})
}

// okSince counts the successful requests sent at or after from.
func (l *rateLoad) okSince(from time.Time) int {
	offset := from.Sub(l.start)
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, o := range l.outcomes {
		if o.ok && o.at >= offset {
			n++
		}
	}
	return n
}

// loadStats summarizes a stopped load.
type loadStats struct {
	sent, failed int64
	expected     int64         // what the rate asks for over the load's life
	duration     time.Duration // the load's life
	failures     map[string]int64
	samples      []string
	// recovery is from the end of the fault to the first success after
	// which no request failed (0 when failures stopped before the fault
	// ended); hasFailures is false when no request failed; recovered is
	// false when the last request still failed.
	recovery    time.Duration
	hasFailures bool
	recovered   bool
}

// stats stops the load and summarizes it; faultEnd is when the fault ended
// (zero: when the load stopped).
func (l *rateLoad) stats(faultEnd time.Time) loadStats {
	l.stop()
	if faultEnd.IsZero() {
		faultEnd = l.stopped
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	s := loadStats{
		sent:     int64(len(l.outcomes)),
		expected: int64(l.stopped.Sub(l.start) * time.Duration(l.rate) / time.Second),
		duration: l.stopped.Sub(l.start),
		failures: maps.Clone(l.failures),
		samples:  slices.Clone(l.samples),
	}
	for _, n := range l.failures {
		s.failed += n
	}
	s.recovery, s.hasFailures, s.recovered = recoveryTime(l.outcomes, faultEnd.Sub(l.start))
	return s
}

// recoveryTime is the time from faultEnd (an offset, like the outcomes')
// to the first success sent after the last failure: 0 when that success was
// sent before the fault ended. hasFailures is false when nothing failed,
// recovered false when the last request sent failed.
func recoveryTime(outcomes []loadOutcome, faultEnd time.Duration) (recovery time.Duration, hasFailures, recovered bool) {
	sorted := slices.Clone(outcomes)
	slices.SortStableFunc(sorted, func(a, b loadOutcome) int { return cmp.Compare(a.at, b.at) })
	lastFailure := -1
	for i, o := range sorted {
		if !o.ok {
			lastFailure = i
		}
	}
	switch {
	case lastFailure < 0:
		return 0, false, true
	case lastFailure == len(sorted)-1:
		return 0, true, false
	}
	return max(0, sorted[lastFailure+1].at-faultEnd), true, true
}

func TestRecoveryTime(t *testing.T) {
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	cases := []struct {
		name                   string
		outcomes               []loadOutcome
		faultEnd               time.Duration
		recovery               time.Duration
		hasFailures, recovered bool
	}{
		{"no failure", []loadOutcome{{ms(0), true}, {ms(10), true}}, ms(5), 0, false, true},
		{"nothing sent", nil, ms(5), 0, false, true},
		{"failures after the fault", []loadOutcome{{ms(0), true}, {ms(10), false}, {ms(20), false}, {ms(30), true}, {ms(40), true}},
			ms(5), ms(25), true, true},
		{"failures only during the fault", []loadOutcome{{ms(0), false}, {ms(10), true}, {ms(20), true}}, ms(15), 0, true, true},
		{"a late failure restarts recovery", []loadOutcome{{ms(10), false}, {ms(20), true}, {ms(30), false}, {ms(40), true}},
			ms(0), ms(40), true, true},
		{"completion order does not matter", []loadOutcome{{ms(40), true}, {ms(30), false}, {ms(10), true}, {ms(35), true}},
			ms(0), ms(35), true, true},
		{"the last request failed", []loadOutcome{{ms(0), true}, {ms(10), false}}, ms(5), 0, true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			recovery, hasFailures, recovered := recoveryTime(tc.outcomes, tc.faultEnd)
			if recovery != tc.recovery || hasFailures != tc.hasFailures || recovered != tc.recovered {
				t.Fatalf("recoveryTime = %s, %v, %v; want %s, %v, %v",
					recovery, hasFailures, recovered, tc.recovery, tc.hasFailures, tc.recovered)
			}
		})
	}
}

// TestRateLoadCounts: a server that answers 503 to its 20th-29th requests:
// the load counts every request and the failures by outcome, and recovers.
func TestRateLoadCounts(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if i := n.Add(1); i >= 20 && i < 30 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	l := startRateLoad(t, "test", srv.URL, 200, 10*time.Second, statusOK)
	eventually(t, 30*time.Second, "40 requests answered", func() error {
		if got := n.Load(); got < 40 {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
	st := l.stats(time.Time{})
	if st.failed != 10 || st.failures["503"] != 10 {
		t.Errorf("failed %d %v, want 10 × 503", st.failed, st.failures)
	}
	if st.sent != n.Load() || st.sent < 40 {
		t.Errorf("sent %d, the server saw %d", st.sent, n.Load())
	}
	if !st.hasFailures || !st.recovered || len(st.samples) != 5 {
		t.Errorf("hasFailures %v, recovered %v, %d samples", st.hasFailures, st.recovered, len(st.samples))
	}
}

// TestRateLoadTimeouts: requests to a server that never answers fail as
// timeouts, and the load does not recover.
func TestRateLoadTimeouts(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		<-r.Context().Done()
	}))
	defer srv.Close()
	l := startRateLoad(t, "test", srv.URL, 100, 50*time.Millisecond, statusOK)
	eventually(t, 30*time.Second, "requests sent", func() error {
		if got := n.Load(); got < 10 {
			return fmt.Errorf("%d so far", got)
		}
		return nil
	})
	st := l.stats(time.Time{})
	if st.sent == 0 || st.failed != st.sent || st.failures["timeout"] != st.sent {
		t.Errorf("sent %d, failed %d %v: want every request a timeout", st.sent, st.failed, st.failures)
	}
	if st.recovered {
		t.Errorf("recovered from a server that never answers")
	}
}
