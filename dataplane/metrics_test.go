package dataplane

import (
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape GETs the admin /metrics with accept and parses the answer with
// the Prometheus parser of its content type.
func scrape(t *testing.T, url, accept string) map[string]*dto.MetricFamily {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", accept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d", url, resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return parseMetrics(t, resp.Header.Get("Content-Type"), accept, body)
}

// parseMetrics parses a /metrics answer of content type contentType with
// expfmt's parser. expfmt decodes the Prometheus text format; it has no
// OpenMetrics decoder, but OpenMetrics 1.0's sample lines are text format
// ones: an OpenMetrics answer must end with "# EOF", which is removed, and
// the rest is parsed as text once a counter family's HELP and TYPE lines
// carry its samples' name (X_total) and UNIT lines are dropped.
func parseMetrics(t *testing.T, contentType, accept string, body []byte) map[string]*dto.MetricFamily {
	t.Helper()
	openMetrics := strings.HasPrefix(contentType, "application/openmetrics-text")
	if openMetrics != strings.Contains(accept, "openmetrics") {
		t.Fatalf("Accept %q answered with %q", accept, contentType)
	}
	if openMetrics {
		trimmed, ok := bytes.CutSuffix(body, []byte("# EOF\n"))
		if !ok {
			t.Fatalf("OpenMetrics answer does not end with # EOF")
		}
		body = openMetricsAsText(trimmed)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("parse /metrics (%s): %v", contentType, err)
	}
	return families
}

// value returns the value of the series of family with labels (a subset).
func value(families map[string]*dto.MetricFamily, family string, labels map[string]string) (float64, bool) {
	f := families[family]
	if f == nil {
		return 0, false
	}
next:
	for _, m := range f.GetMetric() {
		for k, v := range labels {
			found := false
			for _, l := range m.GetLabel() {
				if l.GetName() == k && l.GetValue() == v {
					found = true
				}
			}
			if !found {
				continue next
			}
		}
		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}
	return 0, false
}

// TestAdminMetrics: the admin /metrics answers the Prometheus text format,
// or OpenMetrics when asked, and counts the proxied requests by listener,
// route and cluster, with the xDS state.
func TestAdminMetrics(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t)
	p := startProxy(t, cp)
	cp.set(t, config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backend(t, "a")}.build(t))
	url := waitServing(t, p, http.DefaultClient, "a")
	const sent = 5
	for range sent {
		if code, _, err := get(http.DefaultClient, url); err != nil || code != http.StatusOK {
			t.Fatalf("GET %s: %d %v", url, code, err)
		}
	}
	admin := "http://" + p.AdminAddr() + "/metrics"
	for _, accept := range []string{"text/plain", "application/openmetrics-text; version=1.0.0"} {
		families := scrape(t, admin, accept)
		// waitServing's requests are counted too: at least sent.
		n, ok := value(families, "meshgate_proxy_requests_total", map[string]string{
			"listener": "edge", "route": "all", "cluster": "default/a:80", "code_class": "2xx"})
		if !ok || n < sent {
			t.Errorf("%s: requests_total{listener=edge,route=all,cluster=default/a:80,code_class=2xx} = %v (found %v), want >= %d", accept, n, ok, sent)
		}
		if d, _ := value(families, "meshgate_proxy_request_duration_seconds", map[string]string{"cluster": "default/a:80"}); d != n {
			t.Errorf("%s: %v durations observed, want %v", accept, d, n)
		}
		if v, _ := value(families, "meshgate_proxy_xds_connected", nil); v != 1 {
			t.Errorf("%s: xds_connected = %v, want 1", accept, v)
		}
		if v, ok := value(families, "meshgate_proxy_xds_config_info", map[string]string{"type": "LDS", "version": "v1"}); !ok || v != 1 {
			t.Errorf("%s: xds_config_info{type=LDS,version=v1} = %v, %v", accept, v, ok)
		}
		if v, _ := value(families, "meshgate_proxy_upstream_connections_total", map[string]string{"cluster": "default/a:80"}); v < 1 {
			t.Errorf("%s: upstream_connections_total = %v, want >= 1", accept, v)
		}
		if v, _ := value(families, "meshgate_proxy_xds_updates_accepted_total", map[string]string{"type": "LDS"}); v < 1 {
			t.Errorf("%s: xds_updates_accepted_total{type=LDS} = %v", accept, v)
		}
	}
}

// openMetricsAsText rewrites OpenMetrics 1.0 metadata to the text format's:
// "# HELP X ..." and "# TYPE X counter" become X_total's, "# UNIT" lines go.
func openMetricsAsText(body []byte) []byte {
	lines := strings.Split(string(body), "\n")
	isCounterType := func(line, name string) bool { return line == "# TYPE "+name+" counter" }
	for i, line := range lines {
		switch {
		case strings.HasPrefix(line, "# UNIT "):
			lines[i] = ""
		case strings.HasPrefix(line, "# HELP "):
			name, rest, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if i+1 < len(lines) && isCounterType(lines[i+1], name) {
				lines[i] = "# HELP " + name + "_total " + rest
				lines[i+1] = "# TYPE " + name + "_total counter"
			}
		}
	}
	return []byte(strings.Join(lines, "\n"))
}
