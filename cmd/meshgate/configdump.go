package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/spf13/cobra"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/api/servicemeta"
	"github.com/meshgate/meshgate/dataplane/filters/responselimit"
)

func newConfigDumpCmd() *cobra.Command {
	a := &adminFlags{}
	var output string
	cmd := &cobra.Command{
		Use:   "config-dump NODE",
		Short: "Show the effective traffic policy of one connected proxy: its clusters and routes as it is served them",
		Long: `Config-dump shows what the control plane serves the connected proxy with node
id NODE (GET /config_dump?node=NODE; 'meshgate proxies' lists the ids), read
back from the standard Envoy xDS into the policy it carries:

  listeners  address and HTTP filters;
  clusters   load balancer (and its slow start), connect and upstream idle
             timeouts, circuit breaker and retry budget, outlier detection,
             active health check, endpoints (and their zones, zone@p1 for
             the zones a proxy fails over to: loadBalancer.locality);
  routes     per virtual host and match: where it goes (cluster, weighted
             clusters, redirect, direct response), timeout, retry (conditions,
             retries, per-try timeout, backoff, methods), hash policy, idle
             timeout, fault injection, request and response body limits,
             mirrors, attempt counts.

Secrets are shown by name and kind only: no key material is printed.
-o json and -o yaml print the same, structured.`,
		Example: `  meshgate config-dump 'gateway~edge~vm-1'
  meshgate config-dump 'sidecar~orders~127.0.0.1:21011' -o yaml`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := checkOutputFormat("config-dump", output); err != nil {
				return err
			}
			var raw rawConfigDump
			if err := a.call(cmd.Context(), "GET", "/config_dump?node="+url.QueryEscape(args[0]), nil, &raw); err != nil {
				return err
			}
			view, err := newConfigDumpView(&raw)
			if err != nil {
				return err
			}
			if output == "json" || output == "yaml" {
				return writeStructured(cmd.OutOrStdout(), output, view)
			}
			return printConfigDump(cmd.OutOrStdout(), view)
		},
	}
	cmd.Flags().StringVarP(&output, "output", "o", "table", "output format: table, json or yaml")
	a.register(cmd)
	return cmd
}

// rawConfigDump is the control plane's /config_dump answer: each resource
// as protojson.
type rawConfigDump struct {
	Node      string `json:"node"`
	Version   string `json:"version"`
	Resources struct {
		Listeners []json.RawMessage `json:"listeners"`
		Routes    []json.RawMessage `json:"routes"`
		Clusters  []json.RawMessage `json:"clusters"`
		Endpoints []json.RawMessage `json:"endpoints"`
		Secrets   []json.RawMessage `json:"secrets"`
	} `json:"resources"`
}

// configDumpView is the effective policy of one proxy.
type configDumpView struct {
	Node      string         `json:"node"`
	Version   string         `json:"version"`
	Listeners []listenerView `json:"listeners"`
	Clusters  []clusterView  `json:"clusters"`
	Routes    []routeView    `json:"routes"`
	Secrets   []secretView   `json:"secrets,omitempty"`
}

type listenerView struct {
	Name    string   `json:"name"`
	Address string   `json:"address"`
	Filters []string `json:"filters,omitempty"`
	Routes  string   `json:"routes,omitempty"` // the RDS route configuration
}

type clusterView struct {
	Name string `json:"name"`
	// VIP is the virtual IP of the mesh service the cluster belongs to
	// (its meshgate.dev/service metadata); empty for other clusters.
	VIP              string `json:"vip,omitempty"`
	LB               string `json:"lb"`
	ConnectTimeout   string `json:"connectTimeout,omitempty"`
	IdleTimeout      string `json:"idleTimeout,omitempty"`
	CircuitBreaker   string `json:"circuitBreaker,omitempty"`
	OutlierDetection string `json:"outlierDetection,omitempty"`
	HealthCheck      string `json:"healthCheck,omitempty"`
	Endpoints        int    `json:"endpoints"`
	// Zones counts the endpoints per zone, when they have zones; a zone
	// of priority P > 0 (failover, loadBalancer.locality) is zone@pP.
	Zones string `json:"zones,omitempty"`
}

type routeView struct {
	RouteConfig   string `json:"routeConfig"`
	VirtualHost   string `json:"virtualHost"`
	Match         string `json:"match"`
	To            string `json:"to"`
	Timeout       string `json:"timeout,omitempty"`
	Retry         string `json:"retry,omitempty"`
	Hash          string `json:"hash,omitempty"`
	IdleTimeout   string `json:"idleTimeout,omitempty"`
	Fault         string `json:"fault,omitempty"`
	BodyLimit     string `json:"bodyLimit,omitempty"`
	ResponseLimit string `json:"responseLimit,omitempty"`
	Mirrors       string `json:"mirrors,omitempty"`
	AttemptCounts bool   `json:"attemptCounts,omitempty"`
}

// secretView names a secret and its kind: never its material.
type secretView struct {
	Name string `json:"name"`
	Kind string `json:"kind"`
}

var dumpJSON = protojson.UnmarshalOptions{DiscardUnknown: true}

func decodeAll[M proto.Message](raws []json.RawMessage, kind string, newM func() M) ([]M, error) {
	out := make([]M, 0, len(raws))
	for i, raw := range raws {
		m := newM()
		if err := dumpJSON.Unmarshal(raw, m); err != nil {
			return nil, fmt.Errorf("config dump: %s[%d]: %w", kind, i, err)
		}
		out = append(out, m)
	}
	return out, nil
}

// newConfigDumpView reads the resources of a config dump into their
// effective policy.
func newConfigDumpView(raw *rawConfigDump) (*configDumpView, error) {
	listeners, err := decodeAll(raw.Resources.Listeners, "listeners", func() *listenerv3.Listener { return &listenerv3.Listener{} })
	if err != nil {
		return nil, err
	}
	routes, err := decodeAll(raw.Resources.Routes, "routes", func() *routev3.RouteConfiguration { return &routev3.RouteConfiguration{} })
	if err != nil {
		return nil, err
	}
	clusters, err := decodeAll(raw.Resources.Clusters, "clusters", func() *clusterv3.Cluster { return &clusterv3.Cluster{} })
	if err != nil {
		return nil, err
	}
	endpoints, err := decodeAll(raw.Resources.Endpoints, "endpoints", func() *endpointv3.ClusterLoadAssignment { return &endpointv3.ClusterLoadAssignment{} })
	if err != nil {
		return nil, err
	}
	v := &configDumpView{Node: raw.Node, Version: raw.Version}
	for _, l := range listeners {
		v.Listeners = append(v.Listeners, newListenerView(l))
	}
	cla := make(map[string]*endpointv3.ClusterLoadAssignment, len(endpoints))
	for _, e := range endpoints {
		cla[e.GetClusterName()] = e
	}
	for _, c := range clusters {
		v.Clusters = append(v.Clusters, newClusterView(c, cla))
	}
	for _, rc := range routes {
		for _, vh := range rc.GetVirtualHosts() {
			for _, r := range vh.GetRoutes() {
				v.Routes = append(v.Routes, newRouteView(rc.GetName(), vh, r))
			}
		}
	}
	for i, s := range raw.Resources.Secrets {
		// Decoded into a Secret only to name its kind; nothing of it is kept.
		var secret tlsv3.Secret
		if err := dumpJSON.Unmarshal(s, &secret); err != nil {
			return nil, fmt.Errorf("config dump: secrets[%d]: %w", i, err)
		}
		v.Secrets = append(v.Secrets, secretView{Name: secret.GetName(), Kind: secretKind(&secret)})
	}
	return v, nil
}

func secretKind(s *tlsv3.Secret) string {
	switch {
	case s.GetTlsCertificate() != nil:
		return "certificate and private key (redacted)"
	case s.GetValidationContext() != nil:
		return "trust bundle"
	case s.GetSessionTicketKeys() != nil:
		return "session ticket keys (redacted)"
	case s.GetGenericSecret() != nil:
		return "generic (redacted)"
	}
	return "-"
}

func newListenerView(l *listenerv3.Listener) listenerView {
	v := listenerView{Name: l.GetName()}
	if sa := l.GetAddress().GetSocketAddress(); sa != nil {
		v.Address = sa.GetAddress() + ":" + strconv.Itoa(int(sa.GetPortValue()))
	}
	for _, fc := range l.GetFilterChains() {
		for _, f := range fc.GetFilters() {
			var hcm hcmv3.HttpConnectionManager
			if f.GetTypedConfig() == nil || f.GetTypedConfig().UnmarshalTo(&hcm) != nil {
				continue
			}
			v.Routes = hcm.GetRds().GetRouteConfigName()
			for _, hf := range hcm.GetHttpFilters() {
				if !slices.Contains(v.Filters, hf.GetName()) {
					v.Filters = append(v.Filters, hf.GetName())
				}
			}
		}
	}
	return v
}

func durationText(d *durationpb.Duration) string {
	if d == nil {
		return ""
	}
	return d.AsDuration().String()
}

// fields joins the set name=value pairs, in order.
func fields(pairs ...string) string {
	var parts []string
	for i := 0; i+1 < len(pairs); i += 2 {
		if pairs[i+1] != "" {
			parts = append(parts, pairs[i]+"="+pairs[i+1])
		}
	}
	return strings.Join(parts, " ")
}

func uint32Text(v *wrapperspb.UInt32Value) string {
	if v == nil {
		return ""
	}
	return strconv.FormatUint(uint64(v.GetValue()), 10)
}

func newClusterView(c *clusterv3.Cluster, cla map[string]*endpointv3.ClusterLoadAssignment) clusterView {
	v := clusterView{Name: c.GetName(), LB: c.GetLbPolicy().String(), ConnectTimeout: durationText(c.GetConnectTimeout())}
	if svc, err := servicemeta.Parse(c.GetMetadata().GetFilterMetadata()[servicemeta.Key]); err == nil && svc.VIP.IsValid() {
		v.VIP = svc.VIP.String()
	}
	switch {
	case c.GetLeastRequestLbConfig() != nil:
		lr := c.GetLeastRequestLbConfig()
		v.LB += " " + fields("choices", uint32Text(lr.GetChoiceCount()), "slowStart", durationText(lr.GetSlowStartConfig().GetSlowStartWindow()))
	case c.GetRoundRobinLbConfig().GetSlowStartConfig() != nil:
		v.LB += " " + fields("slowStart", durationText(c.GetRoundRobinLbConfig().GetSlowStartConfig().GetSlowStartWindow()))
	}
	if lc := c.GetCommonLbConfig().GetLocalityWeightedLbConfig(); lc != nil {
		v.LB += " locality-weighted"
	}
	if c.GetCommonLbConfig().GetZoneAwareLbConfig() != nil {
		v.LB += " zone-aware"
	}
	v.LB = strings.TrimSpace(v.LB)
	if anyOpts, ok := c.GetTypedExtensionProtocolOptions()["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]; ok {
		var opts upstreamhttpv3.HttpProtocolOptions
		if anyOpts.UnmarshalTo(&opts) == nil {
			v.IdleTimeout = durationText(opts.GetCommonHttpProtocolOptions().GetIdleTimeout())
		}
	}
	for _, th := range c.GetCircuitBreakers().GetThresholds() {
		budget := ""
		if rb := th.GetRetryBudget(); rb != nil {
			budget = strconv.FormatFloat(rb.GetBudgetPercent().GetValue(), 'g', -1, 64) + "%/" + uint32Text(rb.GetMinRetryConcurrency())
		}
		v.CircuitBreaker = fields("maxConnections", uint32Text(th.GetMaxConnections()), "maxPending", uint32Text(th.GetMaxPendingRequests()),
			"maxRequests", uint32Text(th.GetMaxRequests()), "maxRetries", uint32Text(th.GetMaxRetries()), "retryBudget", budget)
	}
	if od := c.GetOutlierDetection(); od != nil {
		// A check whose enforcing percentage is 0 is off.
		enforced := func(enforcing *wrapperspb.UInt32Value, value string) string {
			if enforcing != nil && enforcing.GetValue() == 0 {
				return ""
			}
			return value
		}
		v.OutlierDetection = fields(
			"consecutive5xx", enforced(od.GetEnforcingConsecutive_5Xx(), uint32Text(od.GetConsecutive_5Xx())),
			"consecutiveGatewayErrors", enforced(od.GetEnforcingConsecutiveGatewayFailure(), uint32Text(od.GetConsecutiveGatewayFailure())),
			"successRateStdev", enforced(od.GetEnforcingSuccessRate(), uint32Text(od.GetSuccessRateStdevFactor())),
			"failurePercent", enforced(od.GetEnforcingFailurePercentage(), uint32Text(od.GetFailurePercentageThreshold())),
			"interval", durationText(od.GetInterval()), "baseEjection", durationText(od.GetBaseEjectionTime()),
			"maxEjectionPercent", uint32Text(od.GetMaxEjectionPercent()))
		if v.OutlierDetection == "" {
			v.OutlierDetection = "on (defaults)"
		}
	}
	for _, hc := range c.GetHealthChecks() {
		kind := "tcp"
		if h := hc.GetHttpHealthCheck(); h != nil {
			kind = "http " + h.GetPath()
		}
		v.HealthCheck = kind + " " + fields("interval", durationText(hc.GetInterval()), "timeout", durationText(hc.GetTimeout()),
			"healthy", uint32Text(hc.GetHealthyThreshold()), "unhealthy", uint32Text(hc.GetUnhealthyThreshold()))
	}
	if a := cla[c.GetName()]; a != nil {
		zones := map[string]int{}
		for _, le := range a.GetEndpoints() {
			v.Endpoints += len(le.GetLbEndpoints())
			if z := le.GetLocality().GetZone(); z != "" {
				if p := le.GetPriority(); p > 0 {
					z += "@p" + strconv.Itoa(int(p)) // a failover priority
				}
				zones[z] += len(le.GetLbEndpoints())
			}
		}
		var parts []string
		for _, z := range slices.Sorted(maps.Keys(zones)) {
			parts = append(parts, z+"="+strconv.Itoa(zones[z]))
		}
		v.Zones = strings.Join(parts, " ")
	}
	return v
}

func matchText(m *routev3.RouteMatch) string {
	var s string
	switch {
	case m.GetPath() != "":
		s = "path " + m.GetPath()
	case m.GetPathSeparatedPrefix() != "":
		s = "prefix " + m.GetPathSeparatedPrefix()
	case m.GetSafeRegex() != nil:
		s = "regex " + m.GetSafeRegex().GetRegex()
	default:
		s = "prefix " + m.GetPrefix()
	}
	for _, h := range m.GetHeaders() {
		s += " " + h.GetName() + "=" + h.GetStringMatch().GetExact() + h.GetStringMatch().GetSafeRegex().GetRegex()
	}
	return s
}

func percentText(p *typev3.FractionalPercent) string {
	if p == nil {
		return "100%"
	}
	den := map[typev3.FractionalPercent_DenominatorType]float64{typev3.FractionalPercent_HUNDRED: 100,
		typev3.FractionalPercent_TEN_THOUSAND: 10_000, typev3.FractionalPercent_MILLION: 1_000_000}[p.GetDenominator()]
	return strconv.FormatFloat(float64(p.GetNumerator())*100/den, 'g', -1, 64) + "%"
}

func newRouteView(rcName string, vh *routev3.VirtualHost, r *routev3.Route) routeView {
	v := routeView{RouteConfig: rcName, VirtualHost: vh.GetName(), Match: matchText(r.GetMatch()),
		AttemptCounts: vh.GetIncludeAttemptCountInResponse() || vh.GetIncludeRequestAttemptCount()}
	switch {
	case r.GetRedirect() != nil:
		v.To = "redirect"
	case r.GetDirectResponse() != nil:
		v.To = "direct " + strconv.Itoa(int(r.GetDirectResponse().GetStatus()))
	}
	if ra := r.GetRoute(); ra != nil {
		if ra.GetCluster() != "" {
			v.To = ra.GetCluster()
		}
		var weighted []string
		for _, w := range ra.GetWeightedClusters().GetClusters() {
			weighted = append(weighted, w.GetName()+":"+uint32Text(w.GetWeight()))
		}
		if len(weighted) > 0 {
			v.To = strings.Join(weighted, " ")
		}
		v.Timeout = durationText(ra.GetTimeout())
		v.IdleTimeout = durationText(ra.GetIdleTimeout())
		if p := ra.GetRetryPolicy(); p != nil {
			backoff := ""
			if b := p.GetRetryBackOff(); b != nil {
				backoff = durationText(b.GetBaseInterval()) + "-" + durationText(b.GetMaxInterval())
			}
			var codes, methods []string
			for _, c := range p.GetRetriableStatusCodes() {
				codes = append(codes, strconv.Itoa(int(c)))
			}
			for _, m := range p.GetRetriableRequestHeaders() {
				methods = append(methods, m.GetStringMatch().GetExact())
			}
			retries := "1"
			if p.GetNumRetries() != nil {
				retries = uint32Text(p.GetNumRetries())
			}
			otherHost := ""
			if len(p.GetRetryHostPredicate()) > 0 {
				otherHost = "yes"
			}
			v.Retry = fields("on", p.GetRetryOn(), "retries", retries, "perTry", durationText(p.GetPerTryTimeout()),
				"codes", strings.Join(codes, ","), "backoff", backoff, "methods", strings.Join(methods, ","), "otherHost", otherHost)
		}
		for _, h := range ra.GetHashPolicy() {
			switch {
			case h.GetHeader() != nil:
				v.Hash = "header " + h.GetHeader().GetHeaderName()
			case h.GetCookie() != nil:
				v.Hash = "cookie " + h.GetCookie().GetName() + " " + fields("ttl", durationText(h.GetCookie().GetTtl()))
			case h.GetConnectionProperties().GetSourceIp():
				v.Hash = "source IP"
			}
			v.Hash = strings.TrimSpace(v.Hash)
		}
		var mirrors []string
		for _, m := range ra.GetRequestMirrorPolicies() {
			share := "100%"
			if rf := m.GetRuntimeFraction(); rf != nil {
				share = percentText(rf.GetDefaultValue())
			}
			mirrors = append(mirrors, m.GetCluster()+" "+share)
		}
		v.Mirrors = strings.Join(mirrors, ", ")
	}
	for _, typed := range r.GetTypedPerFilterConfig() {
		switch typed.MessageName() {
		case "envoy.extensions.filters.http.fault.v3.HTTPFault":
			var f faultv3.HTTPFault
			if typed.UnmarshalTo(&f) != nil {
				continue
			}
			var parts []string
			if d := f.GetDelay(); d != nil {
				parts = append(parts, "delay "+durationText(d.GetFixedDelay())+" "+percentText(d.GetPercentage()))
			}
			if a := f.GetAbort(); a != nil {
				status := strconv.Itoa(int(a.GetHttpStatus()))
				if a.GetGrpcStatus() != 0 {
					status = "grpc " + strconv.Itoa(int(a.GetGrpcStatus()))
				}
				parts = append(parts, "abort "+status+" "+percentText(a.GetPercentage()))
			}
			for _, h := range f.GetHeaders() {
				parts = append(parts, "if "+h.GetName()+"="+h.GetStringMatch().GetExact())
			}
			v.Fault = strings.Join(parts, ", ")
		case "envoy.extensions.filters.http.buffer.v3.BufferPerRoute":
			var b bufferv3.BufferPerRoute
			if typed.UnmarshalTo(&b) == nil && b.GetBuffer() != nil {
				v.BodyLimit = uint32Text(b.GetBuffer().GetMaxRequestBytes()) + " bytes"
			}
		case "envoy.config.route.v3.FilterConfig":
			var fc routev3.FilterConfig
			var ts xdstypev3.TypedStruct
			if typed.UnmarshalTo(&fc) == nil && fc.GetConfig().UnmarshalTo(&ts) == nil &&
				ts.GetTypeUrl() == responselimit.TypeURL {
				if n, ok := ts.GetValue().GetFields()["max_response_bytes"]; ok {
					v.ResponseLimit = strconv.FormatFloat(n.GetNumberValue(), 'f', -1, 64) + " bytes"
				}
			}
		}
	}
	return v
}

// printConfigDump prints the view as tables: listeners, clusters, routes,
// secrets ("-" for what is not set).
func printConfigDump(w io.Writer, v *configDumpView) error {
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	fmt.Fprintf(w, "node %s, version %s\n\nLISTENERS\n", v.Node, dash(v.Version))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tADDRESS\tROUTES\tHTTP FILTERS")
	for _, l := range v.Listeners {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", l.Name, dash(l.Address), dash(l.Routes), dash(strings.Join(l.Filters, ",")))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprint(w, "\nCLUSTERS\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tVIP\tLB\tCONNECT\tIDLE\tENDPOINTS\tZONES\tCIRCUIT BREAKER\tOUTLIER DETECTION\tHEALTH CHECK")
	for _, c := range v.Clusters {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\n", c.Name, dash(c.VIP), c.LB, dash(c.ConnectTimeout), dash(c.IdleTimeout), c.Endpoints,
			dash(c.Zones), dash(c.CircuitBreaker), dash(c.OutlierDetection), dash(c.HealthCheck))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprint(w, "\nROUTES\n")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "VIRTUAL HOST\tMATCH\tTO\tTIMEOUT\tRETRY\tHASH\tIDLE\tFAULT\tBODY LIMIT\tMIRRORS\tATTEMPTS")
	for _, r := range v.Routes {
		attempts := "-"
		if r.AttemptCounts {
			attempts = "counted"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.VirtualHost, r.Match, dash(r.To), dash(r.Timeout), dash(r.Retry),
			dash(r.Hash), dash(r.IdleTimeout), dash(r.Fault), dash(bodyLimitText(r)), dash(r.Mirrors), attempts)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Secrets) > 0 {
		fmt.Fprint(w, "\nSECRETS\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "NAME\tKIND")
		for _, s := range v.Secrets {
			fmt.Fprintf(tw, "%s\t%s\n", s.Name, s.Kind)
		}
		return tw.Flush()
	}
	return nil
}

// bodyLimitText is a route's BODY LIMIT column: the request limit, then
// the response limit ("response N bytes").
func bodyLimitText(r routeView) string {
	if r.ResponseLimit == "" {
		return r.BodyLimit
	}
	if r.BodyLimit == "" {
		return "response " + r.ResponseLimit
	}
	return r.BodyLimit + ", response " + r.ResponseLimit
}
