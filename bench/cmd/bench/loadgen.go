package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// loadResult is what one load-generator run measured.
type loadResult struct {
	rps      float64
	requests float64
	errors   float64
	// latency percentiles in milliseconds; 0 when the tool does not report one.
	p50, p90, p99, p999 float64
}

// runWrk runs wrk (HTTP/1.1 keep-alive, max rate) against url.
func runWrk(ctx context.Context, url string, conns, threads int, dur time.Duration) (loadResult, string, error) {
	return runWrkHeaders(ctx, url, nil, conns, threads, dur)
}

// runWrkHeaders is runWrk with request headers ("Name: value") on every
// request.
func runWrkHeaders(ctx context.Context, url string, headers []string, conns, threads int, dur time.Duration) (loadResult, string, error) {
	return runWrkAs(ctx, nil, url, headers, conns, threads, dur)
}

// runWrkAs is runWrkHeaders with wrk run by a command prefix (say "ip
// netns exec NS setpriv ..."); nil runs wrk itself.
func runWrkAs(ctx context.Context, prefix []string, url string, headers []string, conns, threads int, dur time.Duration) (loadResult, string, error) {
	args := []string{"-t" + strconv.Itoa(threads), "-c" + strconv.Itoa(conns),
		"-d" + durSeconds(dur), "--latency"}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	args = append(args, url)
	cmd := append(append([]string{}, prefix...), "wrk")
	out, err := exec.CommandContext(ctx, cmd[0], append(cmd[1:], args...)...).CombinedOutput()
	if err != nil {
		return loadResult{}, string(out), fmt.Errorf("wrk %s: %w", strings.Join(args, " "), err)
	}
	res, err := parseWrk(string(out))
	return res, string(out), err
}

var (
	wrkRPS      = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkTotal    = regexp.MustCompile(`([0-9]+) requests in`)
	wrkNon2xx   = regexp.MustCompile(`Non-2xx or 3xx responses:\s+([0-9]+)`)
	wrkSockErr  = regexp.MustCompile(`Socket errors: connect ([0-9]+), read ([0-9]+), write ([0-9]+), timeout ([0-9]+)`)
	wrkLatLine  = regexp.MustCompile(`(?m)^\s+(50|90|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
	h2Finished  = regexp.MustCompile(`finished in [0-9.]+[a-z]+, ([0-9.]+) req/s`)
	h2Requests  = regexp.MustCompile(`requests: ([0-9]+) total, [0-9]+ started, [0-9]+ done, ([0-9]+) succeeded, ([0-9]+) failed, ([0-9]+) errored`)
	h2Status    = regexp.MustCompile(`status codes: ([0-9]+) 2xx, ([0-9]+) 3xx, ([0-9]+) 4xx, ([0-9]+) 5xx`)
	h2ReqLatRow = regexp.MustCompile(`(?m)^time for request:\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)\s+([0-9.]+)(us|ms|s)`)
)

// parseWrk reads wrk's text output.
func parseWrk(out string) (loadResult, error) {
	var r loadResult
	m := wrkRPS.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("wrk: no Requests/sec in output")
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := wrkTotal.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseFloat(m[1], 64)
	}
	if m := wrkNon2xx.FindStringSubmatch(out); m != nil {
		n, _ := strconv.ParseFloat(m[1], 64)
		r.errors += n
	}
	if m := wrkSockErr.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.ParseFloat(s, 64)
			r.errors += n
		}
	}
	for _, m := range wrkLatLine.FindAllStringSubmatch(out, -1) {
		v := toMillis(m[2], m[3])
		switch m[1] {
		case "50":
			r.p50 = v
		case "90":
			r.p90 = v
		case "99":
			r.p99 = v
		}
	}
	return r, nil
}

// runH2load runs h2load (h2c with prior knowledge) against url.
func runH2load(ctx context.Context, url string, conns, streams, threads int, dur time.Duration) (loadResult, string, error) {
	args := []string{"-c", strconv.Itoa(conns), "-m", strconv.Itoa(streams), "-t", strconv.Itoa(threads),
		"-D", durSeconds(dur), url}
	out, err := exec.CommandContext(ctx, "h2load", args...).CombinedOutput()
	if err != nil {
		return loadResult{}, string(out), fmt.Errorf("h2load %s: %w", strings.Join(args, " "), err)
	}
	res, err := parseH2load(string(out))
	return res, string(out), err
}

// parseH2load reads h2load's text output.
func parseH2load(out string) (loadResult, error) {
	var r loadResult
	m := h2Finished.FindStringSubmatch(out)
	if m == nil {
		return r, fmt.Errorf("h2load: no 'finished in' line in output")
	}
	r.rps, _ = strconv.ParseFloat(m[1], 64)
	if m := h2Requests.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.ParseFloat(m[2], 64)
		failed, _ := strconv.ParseFloat(m[3], 64)
		errored, _ := strconv.ParseFloat(m[4], 64)
		r.errors += failed + errored
	}
	if m := h2Status.FindStringSubmatch(out); m != nil {
		for _, s := range m[3:] {
			n, _ := strconv.ParseFloat(s, 64)
			r.errors += n
		}
	}
	if r.requests == 0 {
		return r, fmt.Errorf("h2load: no request succeeded")
	}
	if m := h2ReqLatRow.FindStringSubmatch(out); m != nil {
		// min, max, mean: h2load prints no percentiles; report the mean as p50.
		r.p50 = toMillis(m[5], m[6])
	}
	return r, nil
}

// fortioJSON is tools/fortio's output.
type fortioJSON struct {
	ActualQPS float64            `json:"actualQPS"`
	Requests  int64              `json:"requests"`
	Errors    int64              `json:"errors"`
	LatencyMS map[string]float64 `json:"latencyMs"`
}

// runFortio runs fortio's fixed-rate engine (tools/fortio) against url.
func runFortio(ctx context.Context, bin, url, host string, qps float64, conns int, dur time.Duration) (loadResult, string, error) {
	return runFortioAs(ctx, nil, bin, url, host, qps, conns, dur)
}

// runFortioAs is runFortio run by a command prefix (say "ip netns exec NS
// setpriv ..."); nil runs it itself.
func runFortioAs(ctx context.Context, prefix []string, bin, url, host string, qps float64, conns int, dur time.Duration) (loadResult, string, error) {
	args := []string{"-qps", strconv.FormatFloat(qps, 'f', 0, 64), "-c", strconv.Itoa(conns), "-t", dur.String()}
	if host != "" {
		args = append(args, "-host", host)
	}
	args = append(args, url)
	cmd := append(append([]string{}, prefix...), bin)
	out, err := exec.CommandContext(ctx, cmd[0], append(cmd[1:], args...)...).Output()
	if err != nil {
		return loadResult{}, string(out), fmt.Errorf("fortio %s: %w", strings.Join(args, " "), err)
	}
	var f fortioJSON
	if err := json.Unmarshal(out, &f); err != nil {
		return loadResult{}, string(out), fmt.Errorf("fortio output: %w", err)
	}
	return loadResult{
		rps: f.ActualQPS, requests: float64(f.Requests), errors: float64(f.Errors),
		p50: f.LatencyMS["p50"], p90: f.LatencyMS["p90"], p99: f.LatencyMS["p99"], p999: f.LatencyMS["p99.9"],
	}, string(out), nil
}

func toMillis(v, unit string) float64 {
	f, _ := strconv.ParseFloat(v, 64)
	switch unit {
	case "us":
		return f / 1000
	case "s":
		return f * 1000
	}
	return f
}

// durSeconds formats d as whole seconds (at least 1) for wrk and h2load.
func durSeconds(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	if s < 1 {
		s = 1
	}
	return strconv.Itoa(s) + "s"
}
