package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
	"time"
)

// Defaults of the app health probe (Options.AppHealthInterval and
// Options.AppHealthTimeout).
const (
	DefaultAppHealthInterval = time.Second
	DefaultAppHealthTimeout  = time.Second
	// appHealthMaxBody bounds what is read (and discarded) of an HTTP
	// health answer.
	appHealthMaxBody = 4 << 10
	// appHealthMaxHeader bounds the header of an HTTP health answer.
	appHealthMaxHeader = 16 << 10
)

// AppHealth is the last result of a sidecar's probe of its application.
type AppHealth struct {
	Healthy bool
	// Detail says what was probed and how it went, e.g.
	// "app 127.0.0.1:9001 unreachable: connection refused".
	Detail string
}

// appProbeOptions configure an appProbe.
type appProbeOptions struct {
	// Address of the app, host:port.
	Address string
	// Path, when set, is probed with an HTTP GET (2xx and 3xx are healthy);
	// else the probe is a TCP connect.
	Path string
	// Interval between the end of a probe and the start of the next.
	Interval time.Duration
	// Timeout bounds one probe.
	Timeout time.Duration
	Logger  *slog.Logger
	// Dial connects to the app; a net.Dialer's when nil.
	Dial func(ctx context.Context, network, address string) (net.Conn, error)
}

// appProbe probes the application behind a sidecar, every Interval, each
// probe bounded by Timeout, and keeps the last result for Health. It runs
// beside the proxy, never on its request path.
type appProbe struct {
	target   string // what is probed: host:port or the health URL
	method   string // "TCP connect" or "HTTP GET"
	timeout  time.Duration
	interval time.Duration
	check    func(ctx context.Context) error
	logger   *slog.Logger

	initial *AppHealth // before the first probe
	last    atomic.Pointer[AppHealth]
	probes  atomic.Int64 // probes started
}

// newAppProbe returns a probe of opts.Address; it starts unhealthy ("not
// probed yet") until Run's first probe.
func newAppProbe(opts appProbeOptions) *appProbe {
	if opts.Interval <= 0 {
		opts.Interval = DefaultAppHealthInterval
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultAppHealthTimeout
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dial := opts.Dial
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	p := &appProbe{target: opts.Address, method: "TCP connect", timeout: opts.Timeout, interval: opts.Interval, logger: opts.Logger}
	if opts.Path == "" {
		p.check = func(ctx context.Context) error {
			conn, err := dial(ctx, "tcp", opts.Address)
			if err != nil {
				return err
			}
			_ = conn.Close()
			return nil
		}
	} else {
		p.target, p.method = "http://"+opts.Address+opts.Path, "HTTP GET"
		p.check = httpCheck(p.target, dial)
	}
	p.initial = &AppHealth{Detail: fmt.Sprintf("app %s not probed yet", p.target)}
	p.last.Store(p.initial)
	return p
}

// httpCheck GETs target on a new connection each time (no proxy, no
// redirects followed): a 2xx or 3xx status is healthy.
func httpCheck(target string, dial func(ctx context.Context, network, address string) (net.Conn, error)) func(ctx context.Context) error {
	client := &http.Client{
		Transport: &http.Transport{
			Proxy:                  nil,
			DialContext:            dial,
			DisableKeepAlives:      true,
			MaxResponseHeaderBytes: appHealthMaxHeader,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "meshgate-sidecar-app-health")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, appHealthMaxBody))
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return statusError(resp.Status)
		}
		return nil
	}
}

// statusError is an HTTP health answer that is not 2xx or 3xx.
type statusError string

func (e statusError) Error() string { return string(e) }

// Health is the last probe's result.
func (p *appProbe) Health() AppHealth { return *p.last.Load() }

// healthFunc is Health in the shape of dataplane.Options.AppHealth.
func (p *appProbe) healthFunc() func() (bool, string) {
	return func() (bool, string) {
		h := p.last.Load()
		return h.Healthy, h.Detail
	}
}

// Run probes at once, then Interval after the end of each probe, until ctx
// is done.
func (p *appProbe) Run(ctx context.Context) {
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		p.probe(ctx)
		timer.Reset(p.interval)
	}
}

// probe runs one check, bounded by the timeout, records its result, and
// logs a change of health.
func (p *appProbe) probe(ctx context.Context) {
	p.probes.Add(1)
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	err := p.check(cctx)
	cancel()
	if ctx.Err() != nil {
		return // stopping: the result says nothing of the app
	}
	h := &AppHealth{Healthy: err == nil, Detail: p.describe(err)}
	prev := p.last.Swap(h)
	switch {
	case h.Healthy && !prev.Healthy:
		p.logger.Info("app healthy", "app", p.target, "probe", p.method)
	case !h.Healthy && (prev.Healthy || prev == p.initial):
		p.logger.Warn("app unhealthy: this instance is out of rotation until it recovers", "detail", h.Detail)
	}
}

// describe words a probe's outcome for the Consul check output and the
// admin /app_health.
func (p *appProbe) describe(err error) string {
	var status statusError
	switch {
	case err == nil:
		return fmt.Sprintf("app %s healthy (%s)", p.target, p.method)
	case errors.As(err, &status):
		return fmt.Sprintf("app %s unhealthy: %s", p.target, status)
	case errors.Is(err, context.DeadlineExceeded) || os.IsTimeout(err):
		what := "no connection"
		if p.method == "HTTP GET" {
			what = "no answer"
		}
		return fmt.Sprintf("app %s unreachable: %s within %s", p.target, what, p.timeout)
	}
	return fmt.Sprintf("app %s unreachable: %s", p.target, reason(err))
}

// reason is the innermost useful text of a dial or HTTP error: "connection
// refused" rather than "dial tcp 127.0.0.1:9001: connect: connection refused".
func reason(err error) string {
	var sys *os.SyscallError
	if errors.As(err, &sys) {
		return sys.Err.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err.Error()
	}
	return err.Error()
}

// checkAppHealthPath checks an --app-health-path: an absolute path, with an
// optional query.
func checkAppHealthPath(path string) error {
	if path == "" {
		return nil
	}
	u, err := url.ParseRequestURI(path)
	if err != nil || !strings.HasPrefix(path, "/") || u.Host != "" || strings.ContainsAny(path, " \t\r\n#") {
		return fmt.Errorf("app health path %q: want an absolute path such as /healthz", path)
	}
	return nil
}
