package upstream

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Envoy's OutlierDetection defaults.
const (
	defaultConsecutive5xx          = 5
	defaultConsecutiveGateway      = 5
	defaultOutlierInterval         = 10 * time.Second
	defaultBaseEjectionTime        = 30 * time.Second
	defaultMaxEjectionTime         = 300 * time.Second
	defaultMaxEjectionPercent      = 10
	defaultEnforcing5xx            = 100
	defaultEnforcingGateway        = 0
	defaultEnforcingSuccessRate    = 100
	defaultSuccessRateMinimumHosts = 5
	defaultSuccessRateVolume       = 100
	defaultSuccessRateStdevFactor  = 1900
	defaultFailurePercentThreshold = 85
	defaultEnforcingFailurePercent = 0
	defaultFailurePercentMinHosts  = 5
	defaultFailurePercentVolume    = 50
)

// outlierDetector is a cluster's outlier_detection: it ejects the
// endpoints whose answers fail (consecutive 5xx, consecutive gateway
// failures at once; success rate and failure percentage at each interval)
// and brings them back when their ejection time is over, at the next
// interval, as Envoy does.
type outlierDetector struct {
	cluster *Cluster

	consecutive5xx, consecutiveGateway    int64
	enforcing5xx, enforcingGateway        uint32
	interval, baseEjection, maxEjection   time.Duration
	maxEjectionPercent                    uint32
	enforcingSuccessRate                  uint32
	successRateMinHosts, successRateVol   int64
	successRateStdevFactor                float64
	failurePercentThreshold               uint32
	enforcingFailurePercent               uint32
	failurePercentMinHosts, failurePctVol int64

	mu sync.Mutex // serializes ejections (max_ejection_percent)
	// roll returns a number in [0, 100): whether an enforcing percentage
	// applies.
	roll func() uint32
}

func newOutlierDetector(c *Cluster, od *clusterv3.OutlierDetection) (*outlierDetector, error) {
	if od == nil {
		return nil, nil
	}
	d := &outlierDetector{
		cluster:                 c,
		consecutive5xx:          defaultConsecutive5xx,
		consecutiveGateway:      defaultConsecutiveGateway,
		enforcing5xx:            defaultEnforcing5xx,
		enforcingGateway:        defaultEnforcingGateway,
		interval:                defaultOutlierInterval,
		baseEjection:            defaultBaseEjectionTime,
		maxEjection:             defaultMaxEjectionTime,
		maxEjectionPercent:      defaultMaxEjectionPercent,
		enforcingSuccessRate:    defaultEnforcingSuccessRate,
		successRateMinHosts:     defaultSuccessRateMinimumHosts,
		successRateVol:          defaultSuccessRateVolume,
		successRateStdevFactor:  defaultSuccessRateStdevFactor,
		failurePercentThreshold: defaultFailurePercentThreshold,
		enforcingFailurePercent: defaultEnforcingFailurePercent,
		failurePercentMinHosts:  defaultFailurePercentMinHosts,
		failurePctVol:           defaultFailurePercentVolume,
		roll:                    func() uint32 { return rand.Uint32N(100) },
	}
	// Unset fields keep their default.
	u64 := func(v *wrapperspb.UInt32Value, dst *int64) {
		if v != nil {
			*dst = int64(v.GetValue())
		}
	}
	u32 := func(v *wrapperspb.UInt32Value, dst *uint32) {
		if v != nil {
			*dst = v.GetValue()
		}
	}
	if v := od.GetConsecutive_5Xx(); v != nil {
		d.consecutive5xx = int64(v.GetValue())
	}
	u64(od.GetConsecutiveGatewayFailure(), &d.consecutiveGateway)
	if v := od.GetEnforcingConsecutive_5Xx(); v != nil {
		d.enforcing5xx = v.GetValue()
	}
	u32(od.GetEnforcingConsecutiveGatewayFailure(), &d.enforcingGateway)
	u32(od.GetMaxEjectionPercent(), &d.maxEjectionPercent)
	u32(od.GetEnforcingSuccessRate(), &d.enforcingSuccessRate)
	u64(od.GetSuccessRateMinimumHosts(), &d.successRateMinHosts)
	u64(od.GetSuccessRateRequestVolume(), &d.successRateVol)
	if v := od.GetSuccessRateStdevFactor(); v != nil {
		d.successRateStdevFactor = float64(v.GetValue())
	}
	u32(od.GetFailurePercentageThreshold(), &d.failurePercentThreshold)
	u32(od.GetEnforcingFailurePercentage(), &d.enforcingFailurePercent)
	u64(od.GetFailurePercentageMinimumHosts(), &d.failurePercentMinHosts)
	u64(od.GetFailurePercentageRequestVolume(), &d.failurePctVol)
	for _, f := range []struct {
		name string
		v    interface{ AsDuration() time.Duration }
		set  bool
		dst  *time.Duration
	}{
		{"interval", od.GetInterval(), od.GetInterval() != nil, &d.interval},
		{"base_ejection_time", od.GetBaseEjectionTime(), od.GetBaseEjectionTime() != nil, &d.baseEjection},
		{"max_ejection_time", od.GetMaxEjectionTime(), od.GetMaxEjectionTime() != nil, &d.maxEjection},
	} {
		if !f.set {
			continue
		}
		if *f.dst = f.v.AsDuration(); *f.dst <= 0 {
			return nil, fmt.Errorf("outlier_detection.%s: must be positive", f.name)
		}
	}
	for _, p := range []struct {
		name string
		v    uint32
	}{
		{"enforcing_consecutive_5xx", d.enforcing5xx}, {"enforcing_consecutive_gateway_failure", d.enforcingGateway},
		{"max_ejection_percent", d.maxEjectionPercent}, {"enforcing_success_rate", d.enforcingSuccessRate},
		{"failure_percentage_threshold", d.failurePercentThreshold}, {"enforcing_failure_percentage", d.enforcingFailurePercent},
	} {
		if p.v > 100 {
			return nil, fmt.Errorf("outlier_detection.%s: %d must be 0-100", p.name, p.v)
		}
	}
	return d, nil
}

// record counts the outcome of one request to h: a response status, or a
// failure to get one (err: connect failure, reset, timeout, overflow
// excepted). A request the client abandoned counts nothing.
func (d *outlierDetector) record(ctx context.Context, h *host, resp *http.Response, err error) {
	if ctx.Err() != nil {
		return
	}
	gateway, failed := false, false
	switch {
	case err != nil:
		if _, overflow := IsOverflow(err); overflow || errors.Is(err, context.Canceled) {
			return
		}
		failed, gateway = true, true
	case resp.StatusCode >= 500:
		failed = true
		gateway = resp.StatusCode == http.StatusBadGateway || resp.StatusCode == http.StatusServiceUnavailable ||
			resp.StatusCode == http.StatusGatewayTimeout
	}
	if !failed {
		h.successes.Add(1)
		h.consecutive5xx.Store(0)
		h.consecutiveGW.Store(0)
		return
	}
	h.failures.Add(1)
	if n := h.consecutive5xx.Add(1); d.consecutive5xx > 0 && n == d.consecutive5xx {
		d.eject(h, d.enforcing5xx, time.Now())
	}
	if gateway {
		if n := h.consecutiveGW.Add(1); d.consecutiveGateway > 0 && n == d.consecutiveGateway {
			d.eject(h, d.enforcingGateway, time.Now())
		}
	} else {
		h.consecutiveGW.Store(0)
	}
}

// eject ejects h when the enforcing percentage applies and
// max_ejection_percent allows (one endpoint may always be ejected): for
// base_ejection_time × the times it was ejected, at most
// max_ejection_time (or base_ejection_time, when longer).
func (d *outlierDetector) eject(h *host, enforcing uint32, now time.Time) {
	if enforcing == 0 || (enforcing < 100 && d.roll() >= enforcing) {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if h.ejected.Load() {
		return
	}
	set := d.cluster.endpoints.Load()
	total, ejected := int64(len(set.hosts)), int64(0)
	for _, o := range set.hosts {
		if o.ejected.Load() {
			ejected++
		}
	}
	if total == 0 || (ejected > 0 && (ejected+1)*100 > int64(d.maxEjectionPercent)*total) {
		return
	}
	times := h.timesEjected.Add(1)
	duration := time.Duration(min(times, math.MaxInt32)) * d.baseEjection
	if limit := max(d.maxEjection, d.baseEjection); duration > limit || duration < 0 {
		duration = limit
	}
	h.ejectedUntil.Store(now.Add(duration).UnixNano())
	h.ejected.Store(true)
	h.consecutive5xx.Store(0)
	h.consecutiveGW.Store(0)
	d.cluster.stats.Ejections.Inc()
	d.cluster.refreshAvailable()
	d.cluster.logger.Info("endpoint ejected", "endpoint", h.address, "for", duration, "times_ejected", times)
}

// run evaluates the endpoints every interval until ctx ends.
func (d *outlierDetector) run(ctx context.Context) {
	t := time.NewTicker(d.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			d.evaluate(now)
		}
	}
}

// evaluate is one interval: endpoints whose ejection time is over come
// back (and one not ejected during the interval has its ejection
// multiplier decremented), then success rate and failure percentage are
// computed over the interval's counts, which start anew.
func (d *outlierDetector) evaluate(now time.Time) {
	set := d.cluster.endpoints.Load()
	type sample struct {
		h                   *host
		successes, failures int64
	}
	samples := make([]sample, 0, len(set.hosts))
	changed := false
	for _, h := range set.hosts {
		s, f := h.successes.Swap(0), h.failures.Swap(0)
		if h.ejected.Load() {
			if now.UnixNano() >= h.ejectedUntil.Load() {
				h.ejected.Store(false)
				h.ejectedUntil.Store(0)
				changed = true
				d.cluster.logger.Info("endpoint back from ejection", "endpoint", h.address)
			}
			continue
		}
		if h.timesEjected.Load() > 0 && f == 0 {
			h.timesEjected.Add(-1)
		}
		samples = append(samples, sample{h, s, f})
	}
	if changed {
		d.cluster.refreshAvailable()
	}
	// Success rate: over the endpoints with request_volume requests, when
	// there are minimum_hosts of them.
	var rates []float64
	var rated []*host
	for _, s := range samples {
		if total := s.successes + s.failures; total > 0 && total >= d.successRateVol {
			rates = append(rates, float64(s.successes)/float64(total)*100)
			rated = append(rated, s.h)
		}
	}
	if d.enforcingSuccessRate > 0 && int64(len(rates)) >= max(d.successRateMinHosts, 1) {
		var sum float64
		for _, r := range rates {
			sum += r
		}
		mean := sum / float64(len(rates))
		var variance float64
		for _, r := range rates {
			variance += (r - mean) * (r - mean)
		}
		stdev := math.Sqrt(variance / float64(len(rates)))
		threshold := mean - stdev*d.successRateStdevFactor/1000
		for i, r := range rates {
			if r < threshold {
				d.eject(rated[i], d.enforcingSuccessRate, now)
			}
		}
	}
	// Failure percentage: likewise, against a fixed threshold.
	var volume []sample
	for _, s := range samples {
		if total := s.successes + s.failures; total > 0 && total >= d.failurePctVol {
			volume = append(volume, s)
		}
	}
	if d.enforcingFailurePercent > 0 && int64(len(volume)) >= max(d.failurePercentMinHosts, 1) {
		for _, s := range volume {
			if s.failures*100 >= int64(d.failurePercentThreshold)*(s.successes+s.failures) {
				d.eject(s.h, d.enforcingFailurePercent, now)
			}
		}
	}
}
