package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"
)

func TestHistogramQuantile(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name    string
		q       float64
		buckets map[float64]float64
		want    float64 // NaN: no answer
	}{
		{"no observations", 0.5, map[float64]float64{0.1: 0, 1: 0, inf: 0}, math.NaN()},
		{"no +Inf bucket", 0.5, map[float64]float64{0.1: 1, 1: 2}, math.NaN()},
		{"one bucket only", 0.5, map[float64]float64{inf: 4}, math.NaN()},
		// 10 observations all in (0, 0.1]: the median is half way in it.
		{"first bucket from 0", 0.5, map[float64]float64{0.1: 10, 1: 10, inf: 10}, 0.05},
		// 4 in (0, 0.1], 6 in (0.1, 1]: rank 5 is the 1st of 6 in (0.1, 1].
		{"interpolated in the second bucket", 0.5, map[float64]float64{0.1: 4, 1: 10, inf: 10}, 0.1 + 0.9*1/6},
		// rank 9.9 of 10, 9 below 1: 0.9 of one observation in (1, 2.5].
		{"p99", 0.99, map[float64]float64{0.1: 4, 1: 9, 2.5: 10, inf: 10}, 1 + 1.5*0.9},
		{"rank in +Inf: the highest finite bound", 0.99, map[float64]float64{0.1: 1, 1: 2, inf: 10}, 1},
		{"rank on a bucket's edge", 0.5, map[float64]float64{0.1: 5, 1: 10, inf: 10}, 0.1},
		{"non-monotonic counts are made monotonic", 0.5, map[float64]float64{0.1: 6, 1: 5, inf: 10}, 0.1 * 5 / 6},
		{"a zero bucket", 0.1, map[float64]float64{0: 2, 1: 10, inf: 10}, 0},
		{"q out of range", 1.5, map[float64]float64{0.1: 1, inf: 1}, math.NaN()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := histogramQuantile(tt.q, tt.buckets)
			if math.IsNaN(tt.want) != math.IsNaN(got) || (!math.IsNaN(got) && math.Abs(got-tt.want) > 1e-9) {
				t.Errorf("histogramQuantile(%v, %v) = %v, want %v", tt.q, tt.buckets, got, tt.want)
			}
		})
	}
}

func TestSeriesDelta(t *testing.T) {
	inf := math.Inf(1)
	tests := []struct {
		name      string
		prev, cur seriesValue
		want      seriesValue
	}{
		{
			name: "growth",
			prev: seriesValue{requests: 10, buckets: map[float64]float64{0.1: 8, inf: 10}},
			cur:  seriesValue{requests: 25, buckets: map[float64]float64{0.1: 20, inf: 25}},
			want: seriesValue{requests: 15, buckets: map[float64]float64{0.1: 12, inf: 15}},
		},
		{
			name: "new series: counted from 0",
			cur:  seriesValue{requests: 3, buckets: map[float64]float64{0.1: 1, inf: 3}},
			want: seriesValue{requests: 3, buckets: map[float64]float64{0.1: 1, inf: 3}},
		},
		{
			name: "reset (the proxy restarted): counted from 0",
			prev: seriesValue{requests: 100, buckets: map[float64]float64{0.1: 100, inf: 100}},
			cur:  seriesValue{requests: 4, buckets: map[float64]float64{0.1: 4, inf: 4}},
			want: seriesValue{requests: 4, buckets: map[float64]float64{0.1: 4, inf: 4}},
		},
		{
			name: "unchanged",
			prev: seriesValue{requests: 7, buckets: map[float64]float64{0.1: 7, inf: 7}},
			cur:  seriesValue{requests: 7, buckets: map[float64]float64{0.1: 7, inf: 7}},
			want: seriesValue{requests: 0, buckets: map[float64]float64{0.1: 0, inf: 0}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := seriesDelta(tt.prev, tt.cur)
			if got.requests != tt.want.requests || fmt.Sprint(got.buckets) != fmt.Sprint(tt.want.buckets) {
				t.Errorf("seriesDelta = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// exposition is a proxy's /metrics text with the request series of one
// route and cluster: ok 2xx and fail 5xx requests, all of them within
// (le1, le2] of the duration buckets le1 < le2.
func exposition(cluster string, ok, fail int) string {
	var b strings.Builder
	b.WriteString("# TYPE meshgate_proxy_requests_total counter\n")
	b.WriteString("# TYPE meshgate_proxy_request_duration_seconds histogram\n")
	for _, s := range []struct {
		class string
		n     int
	}{{"2xx", ok}, {"5xx", fail}} {
		labels := fmt.Sprintf(`cluster=%q,code_class=%q,listener="l",route="r"`, cluster, s.class)
		fmt.Fprintf(&b, "meshgate_proxy_requests_total{%s} %d\n", labels, s.n)
		fmt.Fprintf(&b, "meshgate_proxy_request_duration_seconds_bucket{%s,le=\"0.001\"} 0\n", labels)
		fmt.Fprintf(&b, "meshgate_proxy_request_duration_seconds_bucket{%s,le=\"0.01\"} %d\n", labels, s.n)
		fmt.Fprintf(&b, "meshgate_proxy_request_duration_seconds_bucket{%s,le=\"+Inf\"} %d\n", labels, s.n)
		fmt.Fprintf(&b, "meshgate_proxy_request_duration_seconds_sum{%s} 0\n", labels)
		fmt.Fprintf(&b, "meshgate_proxy_request_duration_seconds_count{%s} %d\n", labels, s.n)
	}
	return b.String()
}

func sample(t *testing.T, at time.Time, text string) proxySample {
	t.Helper()
	series, err := parseRequestSeries([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return proxySample{at: at, series: series}
}

// TestComputeView: two scrapes of two proxies give each service's requests,
// rate, success rate and quantiles over the interval; an unreachable
// proxy is listed, the others still counted.
func TestComputeView(t *testing.T) {
	t0 := time.Unix(1000, 0)
	t1 := t0.Add(2 * time.Second)
	targets := []topTarget{
		{ID: "gw", Role: "gateway", Namespace: "default", Name: "edge", Admin: "127.0.0.1:1"},
		{ID: "sc", Role: "sidecar", Namespace: "default", Name: "orders", Admin: "127.0.0.1:2"},
		{ID: "down", Role: "sidecar", Namespace: "default", Name: "pay", Admin: "127.0.0.1:3"},
	}
	prev := map[string]proxySample{
		"gw":   sample(t, t0, exposition("default/orders:80", 5, 1)),
		"sc":   sample(t, t0, exposition("inbound|orders", 5, 1)),
		"down": {err: errors.New("connection refused")},
	}
	cur := map[string]proxySample{
		"gw":   sample(t, t1, exposition("default/orders:80", 13, 3)), // +8 ok, +2 fail
		"sc":   sample(t, t1, exposition("inbound|orders", 13, 3)),
		"down": {err: errors.New("connection refused")},
	}
	tests := []struct {
		name     string
		opts     topOptions
		wantRows []string // key requests rps success p50
	}{
		{"by service", topOptions{by: "service"}, []string{
			"default/orders default/orders:80 10 5.00 0.80 0.0055",
			"default/orders inbound|orders 10 5.00 0.80 0.0055",
		}},
		{"by route", topOptions{by: "route"}, []string{
			"default/edge r 10 5.00 0.80 0.0055",
			"default/orders r 10 5.00 0.80 0.0055",
		}},
		{"one service by name", topOptions{by: "service", service: "orders"}, []string{
			"default/orders default/orders:80 10 5.00 0.80 0.0055",
			"default/orders inbound|orders 10 5.00 0.80 0.0055",
		}},
		{"another service", topOptions{by: "service", service: "default/frontend"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			view := computeView(tt.opts, targets, prev, cur)
			var got []string
			for _, r := range view.Rows {
				a, b := r.Service, r.Cluster
				if tt.opts.by == "route" {
					a, b = r.Proxy, r.Route
				}
				got = append(got, fmt.Sprintf("%s %s %v %.2f %.2f %.4f", a, b, r.Requests, r.RequestsPerSecond, *r.SuccessRate, *r.P50Seconds))
			}
			if strings.Join(got, "\n") != strings.Join(tt.wantRows, "\n") {
				t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.wantRows, "\n"))
			}
			if len(view.Proxies) != 3 || view.Proxies[2].Error == "" || view.Proxies[0].Error != "" {
				t.Errorf("proxies = %+v, want the third unreachable", view.Proxies)
			}
		})
	}
}

func TestComputeViewNoRequests(t *testing.T) {
	targets := []topTarget{{ID: "gw", Namespace: "default", Name: "edge"}}
	s := map[string]proxySample{"gw": sample(t, time.Unix(1, 0), exposition("default/orders:80", 5, 0))}
	view := computeView(topOptions{by: "service"}, targets, s, s)
	if len(view.Rows) != 1 || view.Rows[0].Requests != 0 || view.Rows[0].SuccessRate != nil || view.Rows[0].P50Seconds != nil {
		t.Fatalf("rows = %+v, want one row without requests, rate or quantiles", view.Rows)
	}
	var table bytes.Buffer
	if err := renderView(&table, "table", view); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "default/orders:80") || !strings.Contains(table.String(), " - ") {
		t.Errorf("table:\n%s", table.String())
	}
	var js bytes.Buffer
	if err := renderView(&js, "json", view); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Rows []map[string]any `json:"rows"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if v, ok := back.Rows[0]["successRate"]; !ok || v != nil {
		t.Errorf("json successRate = %v (present %v), want null", v, ok)
	}
}

func TestDestination(t *testing.T) {
	tests := []struct {
		cluster, namespace, want string
		ok                       bool
	}{
		{"default/orders:80", "shop", "default/orders", true},
		{"inbound|orders", "shop", "shop/orders", true},
		{"", "shop", "", false},
		{"meshgate_tracing_collector", "shop", "", false},
	}
	for _, tt := range tests {
		if got, ok := destination(tt.cluster, tt.namespace); got != tt.want || ok != tt.ok {
			t.Errorf("destination(%q, %q) = %q, %v; want %q, %v", tt.cluster, tt.namespace, got, ok, tt.want, tt.ok)
		}
	}
}

func TestTopOptionsCheck(t *testing.T) {
	for _, good := range []topOptions{
		{interval: time.Second, output: "table", by: "service"},
		{interval: time.Second, output: "json", by: "consumer", role: "gateway"},
	} {
		if err := good.check(); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []topOptions{
		{interval: 0, output: "table", by: "service"},
		{interval: time.Second, output: "xml", by: "service"},
		{interval: time.Second, output: "table", by: "pod"},
		{interval: time.Second, output: "table", by: "service", role: "mesh"},
		{interval: time.Second, output: "table", by: "consumer", service: "orders"},
	} {
		if err := bad.check(); err == nil {
			t.Errorf("%+v: no error", bad)
		}
	}
}

func TestScrapeAddress(t *testing.T) {
	for in, want := range map[string]string{
		"127.0.0.1:15100": "127.0.0.1:15100",
		"0.0.0.0:15100":   "127.0.0.1:15100",
		"[::]:15100":      "127.0.0.1:15100",
		":15100":          "127.0.0.1:15100",
		"10.0.0.7:15100":  "10.0.0.7:15100",
	} {
		if got := scrapeAddress(in); got != want {
			t.Errorf("scrapeAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

// consumerExposition is a proxy's consumer series as its /metrics shows
// them: requests and 429s of each consumer ("kind/name" → counts).
func consumerExposition(requests, limited map[string]int) string {
	var b strings.Builder
	b.WriteString("# HELP meshgate_proxy_consumer_requests_total Authenticated requests of declared consumers.\n# TYPE meshgate_proxy_consumer_requests_total counter\n")
	for key, n := range requests {
		kind, name, _ := strings.Cut(key, "/")
		fmt.Fprintf(&b, "meshgate_proxy_consumer_requests_total{consumer=%q,kind=%q} %d\n", name, kind, n)
	}
	b.WriteString("# HELP meshgate_proxy_consumer_rate_limited_total Requests of declared consumers refused with 429.\n# TYPE meshgate_proxy_consumer_rate_limited_total counter\n")
	for key, n := range limited {
		kind, name, _ := strings.Cut(key, "/")
		fmt.Fprintf(&b, "meshgate_proxy_consumer_rate_limited_total{consumer=%q,kind=%q} %d\n", name, kind, n)
	}
	return b.String()
}

func consumerSample(t *testing.T, at time.Time, text string) proxySample {
	t.Helper()
	s, err := parseSample([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	s.at = at
	return s
}

// TestComputeViewByConsumer: --by consumer sums each consumer's requests
// and 429s over the proxies (two gateway replicas), as counts and rates
// over the interval; a consumer first seen in the second scrape counts from
// 0; a proxy restarted (counters down) counts from 0, as rate() does; the
// table shows the 429 columns.
func TestComputeViewByConsumer(t *testing.T) {
	t.Parallel()
	t0 := time.Unix(1000, 0)
	t1 := t0.Add(2 * time.Second)
	targets := []topTarget{
		{ID: "gw-1", Role: "gateway", Namespace: "default", Name: "edge", Admin: "127.0.0.1:1"},
		{ID: "gw-2", Role: "gateway", Namespace: "default", Name: "edge", Admin: "127.0.0.1:2"},
	}
	prev := map[string]proxySample{
		"gw-1": consumerSample(t, t0, exposition("default/orders:80", 5, 0)+consumerExposition(map[string]int{"apikey/acme": 10}, map[string]int{"apikey/acme": 2})),
		"gw-2": consumerSample(t, t0, consumerExposition(map[string]int{"apikey/acme": 50, "jwt/billing": 7}, nil)),
	}
	cur := map[string]proxySample{
		"gw-1": consumerSample(t, t1, exposition("default/orders:80", 9, 0)+consumerExposition(map[string]int{"apikey/acme": 16, "basic/bob": 2}, map[string]int{"apikey/acme": 4})),
		// restarted: acme went down from 50 to 4, of which 4 refused
		"gw-2": consumerSample(t, t1, consumerExposition(map[string]int{"apikey/acme": 4, "jwt/billing": 11}, map[string]int{"apikey/acme": 4})),
	}
	view := computeView(topOptions{by: "consumer", interval: 2 * time.Second}, targets, prev, cur)
	var got []string
	for _, r := range view.Rows {
		got = append(got, fmt.Sprintf("%s/%s %v %.1f %v %.1f", r.Kind, r.Consumer, r.Requests, r.RequestsPerSecond, r.RateLimited, r.RateLimitedPerSecond))
	}
	want := []string{"apikey/acme 10 5.0 6 3.0", "basic/bob 2 1.0 0 0.0", "jwt/billing 4 2.0 0 0.0"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("rows:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var b strings.Builder
	if err := renderView(&b, "table", view); err != nil {
		t.Fatal(err)
	}
	table := strings.Join(strings.Fields(b.String()), " ")
	if !strings.Contains(table, "KIND CONSUMER RPS LIMITED/S REQS LIMITED apikey acme 5.00 3.00 10 6") {
		t.Errorf("table:\n%s", b.String())
	}
}
