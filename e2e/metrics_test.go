package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Accept values of a Prometheus scraper: the text format, and OpenMetrics.
const (
	acceptText        = "text/plain;version=0.0.4"
	acceptOpenMetrics = "application/openmetrics-text;version=1.0.0"
)

// scrapeMetrics GETs /metrics at admin (with the bearer token when one is
// given) asking for accept, and parses the answer with expfmt.
func scrapeMetrics(admin, token, accept string) (map[string]*dto.MetricFamily, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+admin+"/metrics", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", accept)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s/metrics: %d: %.200s", admin, resp.StatusCode, body)
	}
	contentType := resp.Header.Get("Content-Type")
	openMetrics := strings.HasPrefix(contentType, "application/openmetrics-text")
	if openMetrics != (accept == acceptOpenMetrics) {
		return nil, fmt.Errorf("Accept %q answered with %q", accept, contentType)
	}
	if openMetrics {
		// expfmt has no OpenMetrics decoder; OpenMetrics 1.0's sample
		// lines are text format ones once the metadata is adapted.
		trimmed, ok := bytes.CutSuffix(body, []byte("# EOF\n"))
		if !ok {
			return nil, fmt.Errorf("OpenMetrics answer of %s does not end with # EOF", admin)
		}
		body = openMetricsAsText(trimmed)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("parse %s/metrics (%s): %w", admin, contentType, err)
	}
	return families, nil
}

// openMetricsAsText rewrites OpenMetrics 1.0 metadata to the text format's:
// a counter family X's "# HELP X" and "# TYPE X counter" become X_total's,
// as its samples are named; "# UNIT" lines go.
func openMetricsAsText(body []byte) []byte {
	lines := strings.Split(string(body), "\n")
	for i, line := range lines {
		switch {
		case strings.HasPrefix(line, "# UNIT "):
			lines[i] = ""
		case strings.HasPrefix(line, "# HELP "):
			name, rest, _ := strings.Cut(strings.TrimPrefix(line, "# HELP "), " ")
			if i+1 < len(lines) && lines[i+1] == "# TYPE "+name+" counter" {
				lines[i] = "# HELP " + name + "_total " + rest
				lines[i+1] = "# TYPE " + name + "_total counter"
			}
		}
	}
	return []byte(strings.Join(lines, "\n"))
}

// sumMetric adds up the counter or gauge values of family's series whose
// labels include want; keep, when set, is told each series counted.
func sumMetric(families map[string]*dto.MetricFamily, family string, want map[string]string, keep func(map[string]string)) float64 {
	var sum float64
	f := families[family]
	if f == nil {
		return 0
	}
	for _, m := range f.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		match := true
		for k, v := range want {
			if labels[k] != v {
				match = false
			}
		}
		if !match {
			continue
		}
		if keep != nil {
			keep(labels)
		}
		sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
	}
	return sum
}

// TestMetricsThroughTheMesh: N requests through gateway → sidecar → app
// are counted N times on each hop, under the listener, route and cluster
// they took and their code class, in both exposition formats; a denied
// request is counted as a denial by its rule; the control plane's metrics
// show the proxies connected.
func TestMetricsThroughTheMesh(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("mesh.yaml", meshPolicy())
	c.startControlPlane()
	m := startMesh(c, c.sidecar, []string{"frontend"})
	c.expectEventually("frontend via gateway", 15*time.Second, m.gw+"/hello", nil, servedBy("frontend"))
	hops := m.admins() // gateway, frontend sidecar

	requests := func(admin string) (float64, []map[string]string) {
		t.Helper()
		families, err := scrapeMetrics(admin, "", acceptText)
		if err != nil {
			t.Fatal(err)
		}
		var series []map[string]string
		n := sumMetric(families, "meshgate_proxy_requests_total", map[string]string{"code_class": "2xx"},
			func(l map[string]string) { series = append(series, l) })
		return n, series
	}
	before := map[string]float64{}
	for name, admin := range hops {
		before[name], _ = requests(admin)
	}
	const sent = 20
	for i := range sent {
		r, err := get(m.gw + "/hello")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		if err := servedBy("frontend")(r); err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
	}
	for name, admin := range hops {
		n, series := requests(admin)
		if got := n - before[name]; got != sent {
			t.Errorf("%s counted %v 2xx requests, want %d (series %v)", name, got, sent, series)
		}
		for _, l := range series {
			if l["listener"] == "" || l["route"] == "" || !strings.Contains(l["cluster"], "frontend") {
				t.Errorf("%s: a request series without its listener, route or frontend cluster: %v", name, l)
			}
		}
		// Both formats parse, and agree.
		for _, accept := range []string{acceptText, acceptOpenMetrics} {
			families, err := scrapeMetrics(admin, "", accept)
			if err != nil {
				t.Fatal(err)
			}
			if got := sumMetric(families, "meshgate_proxy_requests_total", map[string]string{"code_class": "2xx"}, nil); got != n {
				t.Errorf("%s (%s): %v 2xx requests, want %v", name, accept, got, n)
			}
			if v := sumMetric(families, "meshgate_proxy_xds_connected", nil, nil); v != 1 {
				t.Errorf("%s (%s): xds_connected %v", name, accept, v)
			}
			if v := sumMetric(families, "meshgate_proxy_certificate_expiry_timestamp_seconds", nil, nil); v < float64(time.Now().Unix()) {
				t.Errorf("%s (%s): certificate expiry %v, want a time to come", name, accept, v)
			}
		}
	}

	t.Run("a denial is counted by its rule", func(t *testing.T) {
		c.policy("edge-clients.yaml", `
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: edge-clients}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  rules:
    - name: blocked-client
      action: DENY
      from: [{ipBlocks: [127.0.0.2/32]}]
`)
		eventually(t, 30*time.Second, "the denial in force", func() error {
			code, err := getFrom("127.0.0.2", m.gw+"/hello")
			if err != nil || code != http.StatusForbidden {
				return fmt.Errorf("from 127.0.0.2: %d %v", code, err)
			}
			return nil
		})
		families, err := scrapeMetrics(hops["gateway"], "", acceptOpenMetrics)
		if err != nil {
			t.Fatal(err)
		}
		if n := sumMetric(families, "meshgate_proxy_rbac_denials_total", map[string]string{"policy": "default/edge-clients/blocked-client"}, nil); n < 1 {
			t.Errorf("gateway counted %v denials by default/edge-clients/blocked-client", n)
		}
		if n := sumMetric(families, "meshgate_proxy_requests_total", map[string]string{"code_class": "4xx"}, nil); n < 1 {
			t.Errorf("gateway counted %v 4xx requests", n)
		}
	})

	t.Run("the control plane shows the proxies connected", func(t *testing.T) {
		token := c.adminToken()
		if _, err := scrapeMetrics(c.admin, "", acceptText); err == nil || !strings.Contains(err.Error(), "401") {
			t.Errorf("control plane /metrics without the admin token: %v, want 401", err)
		}
		for _, accept := range []string{acceptText, acceptOpenMetrics} {
			families, err := scrapeMetrics(c.admin, token, accept)
			if err != nil {
				t.Fatal(err)
			}
			for role, want := range map[string]float64{"gateway": 1, "sidecar": 1} {
				if n := sumMetric(families, "meshgate_controlplane_proxies_connected", map[string]string{"role": role}, nil); n != want {
					t.Errorf("(%s) proxies_connected{role=%s} = %v, want %v", accept, role, n, want)
				}
			}
			if n := sumMetric(families, "meshgate_controlplane_pushes_total", nil, nil); n < 1 {
				t.Errorf("(%s) pushes_total = %v", accept, n)
			}
			if n := sumMetric(families, "meshgate_controlplane_certificates_issued_total", nil, nil); n < 2 {
				t.Errorf("(%s) certificates_issued_total = %v, want >= 2 (gateway, sidecar)", accept, n)
			}
		}
	})
}
