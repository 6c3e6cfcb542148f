package main

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/meshgate/meshgate/controlplane"
)

// The proxy metrics meshgate top reads (docs/observability.md, Metrics).
const (
	metricRequests        = "meshgate_proxy_requests_total"
	metricRequestDuration = "meshgate_proxy_request_duration_seconds"
	// By consumer (--by consumer): the declared consumers' requests and
	// 429s (docs/api-gateway.md, Consumers).
	metricConsumerRequests    = "meshgate_proxy_consumer_requests_total"
	metricConsumerRateLimited = "meshgate_proxy_consumer_rate_limited_total"
)

// Limits of one scrape of a proxy's /metrics.
const (
	scrapeTimeout  = 5 * time.Second
	scrapeMaxBytes = 16 << 20
)

// topOptions are meshgate top's flags.
type topOptions struct {
	interval time.Duration
	once     bool
	output   string
	by       string
	role     string
	service  string
	proxy    string
}

func newTopCmd() *cobra.Command {
	a := &adminFlags{}
	o := topOptions{}
	cmd := &cobra.Command{
		Use:   "top",
		Short: "Show live requests/s, success rate and p50/p99 latency per service or route (or requests/s and 429s/s per consumer), from the proxies' metrics",
		Long: `Top lists the proxies connected to the control plane (GET /status, with
the admin address each proxy reported), scrapes each one's /metrics twice per
interval and shows, from the differences, per service (the destination
cluster, e.g. default/orders:80 or a sidecar's inbound|orders) or per route
(--by route, per proxy):

  RPS      requests per second over the interval
  SUCCESS  the share of responses that are not 5xx ("-" without requests)
  P50/P99  latency quantiles, interpolated in the proxies' duration histogram
           buckets as Prometheus' histogram_quantile does
  REQS     requests in the interval

Every proxy is counted where it served the request: a request through the
gateway and the frontend's sidecar appears under default/frontend:80 (the
gateway's cluster) and under inbound|frontend (the sidecar's).

--by consumer shows, per declared consumer (an API key consumer, a
basic-auth user, a JWT consumer: KIND and CONSUMER), summed over the proxies:

  RPS        its authenticated requests per second (the rate-limited included)
  LIMITED/S  its requests refused 429 by a local or global rate limit, per second
  REQS, LIMITED  the same counts over the interval

(--service does not apply: consumer metrics have no destination.)

The view is redrawn every --interval on a terminal, appended otherwise;
--once prints one interval and exits. A proxy that cannot be scraped is
listed as unreachable, the others are still shown. Proxies' admin
endpoints listen on loopback by default: run top where the proxies run (a
proxy whose admin address is a wildcard is scraped on 127.0.0.1).`,
		Example: `  meshgate top
  meshgate top --by route --role gateway
  meshgate top --service orders --once -o json
  meshgate top --by consumer --role gateway`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := o.check(); err != nil {
				return &exitError{code: 2, err: err}
			}
			return runTop(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), a, o)
		},
	}
	f := cmd.Flags()
	f.DurationVar(&o.interval, "interval", 2*time.Second, "interval between the two scrapes a view is computed from, and between redraws")
	f.BoolVar(&o.once, "once", false, "print one interval and exit")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table, json or yaml")
	f.StringVar(&o.by, "by", "service", "group by: service (destination cluster), route (per proxy) or consumer (declared consumers, over the proxies)")
	f.StringVar(&o.role, "role", "", "only proxies of this role: gateway or sidecar")
	f.StringVar(&o.service, "service", "", "only requests to this service (NAME or NAMESPACE/NAME)")
	f.StringVar(&o.proxy, "proxy", "", "only this proxy: its node id, or the NAME or NAMESPACE/NAME of its gateway or service")
	a.register(cmd)
	return cmd
}

func (o topOptions) check() error {
	switch {
	case o.interval <= 0:
		return fmt.Errorf("top: --interval %s: must be positive", o.interval)
	case o.output != "table" && o.output != "json" && o.output != "yaml":
		return fmt.Errorf("top: unknown -o %q (want table, json or yaml)", o.output)
	case o.by != "service" && o.by != "route" && o.by != "consumer":
		return fmt.Errorf("top: unknown --by %q (want service, route or consumer)", o.by)
	case o.by == "consumer" && o.service != "":
		return fmt.Errorf("top: --service does not apply to --by consumer (consumer metrics have no destination)")
	case o.role != "" && o.role != "gateway" && o.role != "sidecar":
		return fmt.Errorf("top: unknown --role %q (want gateway or sidecar)", o.role)
	}
	return nil
}

// topTarget is a proxy to scrape.
type topTarget struct {
	ID        string `json:"id"`
	Role      string `json:"role"`
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Admin     string `json:"admin"`
}

// matches reports whether the proxy passes --role and --proxy.
func (t topTarget) matches(o topOptions) bool {
	if o.role != "" && t.Role != o.role {
		return false
	}
	if o.proxy != "" && o.proxy != t.ID && o.proxy != t.Name && o.proxy != t.Namespace+"/"+t.Name {
		return false
	}
	return true
}

// runTop shows views until ctx is done, or one with --once. With --once it
// tells progress when the interval's first scrape is done: the requests
// counted are those that end from then on until the view is printed.
func runTop(ctx context.Context, out, progress io.Writer, a *adminFlags, o topOptions) error {
	terminal := isTerminal(out)
	var prev map[string]proxySample
	for {
		targets, err := topTargets(ctx, a, o)
		if err != nil {
			return err
		}
		if prev == nil {
			prev = scrapeAll(ctx, targets)
			if o.once {
				fmt.Fprintf(progress, "top: first scrape of %d proxies done; measuring for %s\n", len(targets), o.interval)
			}
			if err := sleepCtx(ctx, o.interval); err != nil {
				return nil
			}
		}
		cur := scrapeAll(ctx, targets)
		view := computeView(o, targets, prev, cur)
		var buf bytes.Buffer
		if err := renderView(&buf, o.output, view); err != nil {
			return err
		}
		switch {
		case terminal && !o.once:
			fmt.Fprint(out, "\x1b[H\x1b[2J") // home, clear
		case !o.once && o.output == "table":
			fmt.Fprintf(out, "--- %s\n", view.Time.Format(time.RFC3339))
		}
		if _, err := out.Write(buf.Bytes()); err != nil {
			return err
		}
		if o.once {
			return nil
		}
		prev = cur
		if err := sleepCtx(ctx, o.interval); err != nil {
			return nil
		}
	}
}

// topTargets lists the connected proxies that pass the filters.
func topTargets(ctx context.Context, a *adminFlags, o topOptions) ([]topTarget, error) {
	var st controlplane.Status
	if err := a.call(ctx, "GET", "/status", nil, &st); err != nil {
		return nil, fmt.Errorf("top: list the proxies: %w", err)
	}
	var targets []topTarget
	for _, p := range st.Proxies {
		t := topTarget{ID: p.ID, Role: p.Role, Namespace: p.Namespace, Name: p.Name, Admin: scrapeAddress(p.AdminAddress)}
		if t.matches(o) {
			targets = append(targets, t)
		}
	}
	return targets, nil
}

// scrapeAddress is where to reach an admin address: a wildcard host is
// reached on loopback.
func scrapeAddress(admin string) string {
	host, port, err := net.SplitHostPort(admin)
	if err != nil {
		return admin
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return net.JoinHostPort("127.0.0.1", port)
	}
	return admin
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// isTerminal reports whether w is a terminal (a character device).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// seriesKey is the label set of one request series.
type seriesKey struct {
	listener, route, cluster, codeClass string
}

// seriesValue is one series' request count and cumulative duration
// histogram buckets (upper bound in seconds → count).
type seriesValue struct {
	requests float64
	buckets  map[float64]float64
}

// consumerKey is a declared consumer: the labels of its series.
type consumerKey struct{ kind, consumer string }

// consumerValue is a consumer's request and 429 counts.
type consumerValue struct{ requests, rateLimited float64 }

// proxySample is one scrape of one proxy.
type proxySample struct {
	at        time.Time
	series    map[seriesKey]seriesValue
	consumers map[consumerKey]consumerValue
	err       error
}

// scrapeAll scrapes every target, by node id, in parallel.
func scrapeAll(ctx context.Context, targets []topTarget) map[string]proxySample {
	type result struct {
		id string
		s  proxySample
	}
	results := make(chan result, len(targets))
	for _, t := range targets {
		go func() { results <- result{t.ID, scrapeProxy(ctx, t)} }()
	}
	out := make(map[string]proxySample, len(targets))
	for range targets {
		r := <-results
		out[r.id] = r.s
	}
	return out
}

// scrapeProxy GETs a proxy's /metrics and keeps its request series.
func scrapeProxy(ctx context.Context, t topTarget) proxySample {
	if t.Admin == "" {
		return proxySample{err: fmt.Errorf("admin address unknown: the proxy did not report it (an older meshgate?)")}
	}
	ctx, cancel := context.WithTimeout(ctx, scrapeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+t.Admin+"/metrics", nil)
	if err != nil {
		return proxySample{err: err}
	}
	req.Header.Set("Accept", "text/plain;version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return proxySample{err: fmt.Errorf("GET http://%s/metrics: %w", t.Admin, err)}
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, scrapeMaxBytes))
	if err != nil {
		return proxySample{err: fmt.Errorf("GET http://%s/metrics: %w", t.Admin, err)}
	}
	if resp.StatusCode != http.StatusOK {
		return proxySample{err: fmt.Errorf("GET http://%s/metrics: %s", t.Admin, resp.Status)}
	}
	s, err := parseSample(body)
	if err != nil {
		return proxySample{err: fmt.Errorf("http://%s/metrics: %w", t.Admin, err)}
	}
	s.at = time.Now()
	return s
}

// parseSample reads the request series and the consumer series from a
// Prometheus text exposition.
func parseSample(text []byte) (proxySample, error) {
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		return proxySample{}, fmt.Errorf("parse the metrics: %w", err)
	}
	consumers := map[consumerKey]consumerValue{}
	for _, name := range []string{metricConsumerRequests, metricConsumerRateLimited} {
		for _, m := range families[name].GetMetric() {
			labels := labelMap(m.GetLabel())
			k := consumerKey{labels["kind"], labels["consumer"]}
			v := consumers[k]
			if name == metricConsumerRequests {
				v.requests = m.GetCounter().GetValue()
			} else {
				v.rateLimited = m.GetCounter().GetValue()
			}
			consumers[k] = v
		}
	}
	return proxySample{series: requestSeries(families), consumers: consumers}, nil
}

// parseRequestSeries reads the request count and duration histogram series
// from a Prometheus text exposition.
func parseRequestSeries(text []byte) (map[seriesKey]seriesValue, error) {
	s, err := parseSample(text)
	return s.series, err
}

// requestSeries is the request count and duration histogram series of
// parsed metric families.
func requestSeries(families map[string]*dto.MetricFamily) map[seriesKey]seriesValue {
	series := map[seriesKey]seriesValue{}
	keyOf := func(labels map[string]string) seriesKey {
		return seriesKey{labels["listener"], labels["route"], labels["cluster"], labels["code_class"]}
	}
	for _, m := range families[metricRequests].GetMetric() {
		k := keyOf(labelMap(m.GetLabel()))
		v := series[k]
		v.requests = m.GetCounter().GetValue()
		series[k] = v
	}
	for _, m := range families[metricRequestDuration].GetMetric() {
		k := keyOf(labelMap(m.GetLabel()))
		v := series[k]
		v.buckets = map[float64]float64{}
		for _, b := range m.GetHistogram().GetBucket() {
			v.buckets[b.GetUpperBound()] = float64(b.GetCumulativeCount())
		}
		v.buckets[math.Inf(1)] = float64(m.GetHistogram().GetSampleCount())
		series[k] = v
	}
	return series
}

func labelMap[L interface {
	GetName() string
	GetValue() string
}](labels []L) map[string]string {
	out := make(map[string]string, len(labels))
	for _, l := range labels {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// counterDelta is how much a counter grew from prev to cur; a counter that
// went down was reset (the proxy restarted) and counts from 0, as in
// Prometheus' rate().
func counterDelta(prev, cur float64) float64 {
	if cur < prev {
		return cur
	}
	return cur - prev
}

// seriesDelta is the change of one series over an interval. A series absent
// from prev was created since (series start at 0).
func seriesDelta(prev, cur seriesValue) seriesValue {
	out := seriesValue{requests: counterDelta(prev.requests, cur.requests), buckets: map[float64]float64{}}
	reset := cur.buckets[math.Inf(1)] < prev.buckets[math.Inf(1)]
	for le, n := range cur.buckets {
		if reset {
			out.buckets[le] = n
		} else {
			out.buckets[le] = counterDelta(prev.buckets[le], n)
		}
	}
	return out
}

// histogramQuantile is Prometheus' histogram_quantile over cumulative
// buckets (upper bound → count, +Inf included): the bucket holding the
// q-th rank, interpolated linearly within it; the highest finite bound when
// the rank falls in +Inf; NaN without observations.
func histogramQuantile(q float64, buckets map[float64]float64) float64 {
	if q < 0 || q > 1 || math.IsNaN(q) {
		return math.NaN()
	}
	bounds := make([]float64, 0, len(buckets))
	for le := range buckets {
		bounds = append(bounds, le)
	}
	slices.Sort(bounds)
	if len(bounds) < 2 || !math.IsInf(bounds[len(bounds)-1], 1) {
		return math.NaN()
	}
	counts := make([]float64, len(bounds))
	for i, le := range bounds {
		counts[i] = buckets[le]
		if i > 0 && counts[i] < counts[i-1] {
			counts[i] = counts[i-1] // not monotonic (scraped mid-update): as Prometheus does
		}
	}
	total := counts[len(counts)-1]
	if total == 0 {
		return math.NaN()
	}
	rank := q * total
	i, _ := slices.BinarySearchFunc(counts, rank, func(c, r float64) int { return cmp.Compare(c, r) })
	if i == len(bounds)-1 {
		return bounds[len(bounds)-2]
	}
	if i == 0 && bounds[0] <= 0 {
		return bounds[0]
	}
	lower, below := 0.0, 0.0
	if i > 0 {
		lower, below = bounds[i-1], counts[i-1]
	}
	upper, in := bounds[i], counts[i]-below
	if in == 0 {
		return upper
	}
	return lower + (upper-lower)*(rank-below)/in
}

// topView is one interval's view.
type topView struct {
	Time     time.Time     `json:"time" yaml:"time"`
	Interval string        `json:"interval" yaml:"interval"`
	By       string        `json:"by" yaml:"by"`
	Rows     []topRow      `json:"rows" yaml:"rows"`
	Proxies  []topProxyRow `json:"proxies" yaml:"proxies"`
}

// topRow is a service's or a route's traffic over the interval.
type topRow struct {
	// Service is the destination cluster's service (NAMESPACE/NAME), and
	// Cluster the cluster (default/orders:80, inbound|orders).
	Service string `json:"service,omitempty" yaml:"service,omitempty"`
	Cluster string `json:"cluster,omitempty" yaml:"cluster,omitempty"`
	// Proxy (NAMESPACE/NAME of its gateway or service) and Route, by route.
	Proxy             string   `json:"proxy,omitempty" yaml:"proxy,omitempty"`
	Route             string   `json:"route,omitempty" yaml:"route,omitempty"`
	Requests          float64  `json:"requests" yaml:"requests"`
	ServerErrors      float64  `json:"serverErrors" yaml:"serverErrors"`
	RequestsPerSecond float64  `json:"requestsPerSecond" yaml:"requestsPerSecond"`
	SuccessRate       *float64 `json:"successRate" yaml:"successRate"`
	P50Seconds        *float64 `json:"p50Seconds" yaml:"p50Seconds"`
	P99Seconds        *float64 `json:"p99Seconds" yaml:"p99Seconds"`
	// Kind (apikey, basic, jwt) and Consumer, by consumer, with the
	// requests refused 429 by a rate limit (among Requests).
	Kind                 string  `json:"kind,omitempty" yaml:"kind,omitempty"`
	Consumer             string  `json:"consumer,omitempty" yaml:"consumer,omitempty"`
	RateLimited          float64 `json:"rateLimited,omitempty" yaml:"rateLimited,omitempty"`
	RateLimitedPerSecond float64 `json:"rateLimitedPerSecond,omitempty" yaml:"rateLimitedPerSecond,omitempty"`

	buckets map[float64]float64
}

// topProxyRow is a proxy scraped, or not.
type topProxyRow struct {
	topTarget `yaml:",inline"`
	Error     string `json:"error,omitempty" yaml:"error,omitempty"`
}

// destination splits a cluster into its service: "ns/name:port" is
// ns/name; a sidecar's "inbound|name" is its own service (namespace of the
// proxy). ok is false for other names (the tracing collector's, an empty
// cluster).
func destination(cluster, proxyNamespace string) (service string, ok bool) {
	if name, found := strings.CutPrefix(cluster, "inbound|"); found {
		return proxyNamespace + "/" + name, true
	}
	if i := strings.LastIndexByte(cluster, ':'); i > 0 && strings.Contains(cluster[:i], "/") {
		return cluster[:i], true
	}
	return "", false
}

// serviceMatches reports whether service (NAMESPACE/NAME) is the one --service names.
func serviceMatches(service, want string) bool {
	if want == "" {
		return true
	}
	if strings.Contains(want, "/") {
		return service == want
	}
	_, name, _ := strings.Cut(service, "/")
	return name == want
}

// computeView turns two scrapes of the targets into rows.
func computeView(o topOptions, targets []topTarget, prev, cur map[string]proxySample) topView {
	view := topView{Time: time.Now().UTC(), Interval: o.interval.String(), By: o.by, Rows: []topRow{}, Proxies: []topProxyRow{}}
	rows := map[[3]string]*topRow{}
	for _, t := range targets {
		p, c := prev[t.ID], cur[t.ID]
		pr := topProxyRow{topTarget: t}
		switch {
		case c.err != nil:
			pr.Error = c.err.Error()
		case p.err != nil:
			pr.Error = p.err.Error()
		case c.series == nil || p.series == nil:
			pr.Error = "not scraped twice yet"
		}
		view.Proxies = append(view.Proxies, pr)
		if pr.Error != "" {
			continue
		}
		elapsed := c.at.Sub(p.at).Seconds()
		if o.by == "consumer" {
			addConsumerRows(rows, p.consumers, c.consumers, elapsed)
			continue
		}
		for k, v := range c.series {
			service, isService := destination(k.cluster, t.Namespace)
			if o.service != "" && (!isService || !serviceMatches(service, o.service)) {
				continue
			}
			var key [3]string
			row := topRow{}
			if o.by == "route" {
				row.Proxy, row.Route = t.Namespace+"/"+t.Name, k.route
				key = [3]string{"route", row.Proxy, row.Route}
			} else {
				row.Service, row.Cluster = service, k.cluster
				key = [3]string{"service", service, k.cluster}
			}
			r := rows[key]
			if r == nil {
				row.buckets = map[float64]float64{}
				r = &row
				rows[key] = r
			}
			d := seriesDelta(p.series[k], v)
			r.Requests += d.requests
			if k.codeClass == "5xx" {
				r.ServerErrors += d.requests
			}
			if elapsed > 0 {
				r.RequestsPerSecond += d.requests / elapsed
			}
			for le, n := range d.buckets {
				r.buckets[le] += n
			}
		}
	}
	for _, r := range rows {
		if o.by == "consumer" {
			view.Rows = append(view.Rows, *r)
			continue
		}
		if r.Requests > 0 {
			r.SuccessRate = ptr((r.Requests - r.ServerErrors) / r.Requests)
		}
		if q := histogramQuantile(0.5, r.buckets); !math.IsNaN(q) {
			r.P50Seconds = ptr(q)
		}
		if q := histogramQuantile(0.99, r.buckets); !math.IsNaN(q) {
			r.P99Seconds = ptr(q)
		}
		view.Rows = append(view.Rows, *r)
	}
	slices.SortFunc(view.Rows, func(a, b topRow) int {
		return cmp.Or(cmp.Compare(a.Service, b.Service), cmp.Compare(a.Cluster, b.Cluster),
			cmp.Compare(a.Proxy, b.Proxy), cmp.Compare(a.Route, b.Route),
			cmp.Compare(a.Kind, b.Kind), cmp.Compare(a.Consumer, b.Consumer))
	})
	return view
}

// addConsumerRows adds one proxy's consumer counts over an interval
// (elapsed seconds) to the rows by consumer: a consumer's row sums every
// proxy's.
func addConsumerRows(rows map[[3]string]*topRow, prev, cur map[consumerKey]consumerValue, elapsed float64) {
	for k, v := range cur {
		key := [3]string{"consumer", k.kind, k.consumer}
		r := rows[key]
		if r == nil {
			r = &topRow{Kind: k.kind, Consumer: k.consumer}
			rows[key] = r
		}
		requests, limited := counterDelta(prev[k].requests, v.requests), counterDelta(prev[k].rateLimited, v.rateLimited)
		r.Requests += requests
		r.RateLimited += limited
		if elapsed > 0 {
			r.RequestsPerSecond += requests / elapsed
			r.RateLimitedPerSecond += limited / elapsed
		}
	}
}

func ptr(f float64) *float64 { return &f }

// renderView writes a view as a table, JSON or YAML.
func renderView(w io.Writer, output string, view topView) error {
	switch output {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(view)
	case "yaml":
		enc := yaml.NewEncoder(w)
		if err := enc.Encode(view); err != nil {
			return err
		}
		return enc.Close()
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	switch view.By {
	case "consumer":
		fmt.Fprintln(tw, "KIND\tCONSUMER\tRPS\tLIMITED/S\tREQS\tLIMITED")
	case "route":
		fmt.Fprintln(tw, "PROXY\tROUTE\tRPS\tSUCCESS\tP50\tP99\tREQS")
	default:
		fmt.Fprintln(tw, "SERVICE\tCLUSTER\tRPS\tSUCCESS\tP50\tP99\tREQS")
	}
	for _, r := range view.Rows {
		if view.By == "consumer" {
			fmt.Fprintf(tw, "%s\t%s\t%.2f\t%.2f\t%.0f\t%.0f\n", r.Kind, r.Consumer, r.RequestsPerSecond, r.RateLimitedPerSecond, r.Requests, r.RateLimited)
			continue
		}
		first, second := r.Service, r.Cluster
		if view.By == "route" {
			first, second = r.Proxy, r.Route
		}
		fmt.Fprintf(tw, "%s\t%s\t%.2f\t%s\t%s\t%s\t%.0f\n", cmp.Or(first, "-"), cmp.Or(second, "-"), r.RequestsPerSecond,
			formatRate(r.SuccessRate), formatSeconds(r.P50Seconds), formatSeconds(r.P99Seconds), r.Requests)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, p := range view.Proxies {
		if p.Error != "" {
			fmt.Fprintf(w, "unreachable: %s %s/%s (%s, admin %s): %s\n", p.Role, p.Namespace, p.Name, p.ID, cmp.Or(p.Admin, "-"), p.Error)
		}
	}
	_, err := fmt.Fprintf(w, "%d proxies, interval %s\n", len(view.Proxies), view.Interval)
	return err
}

func formatRate(r *float64) string {
	if r == nil {
		return "-"
	}
	return fmt.Sprintf("%.2f%%", *r*100)
}

func formatSeconds(s *float64) string {
	if s == nil {
		return "-"
	}
	return (time.Duration(*s * float64(time.Second))).Round(10 * time.Microsecond).String()
}
