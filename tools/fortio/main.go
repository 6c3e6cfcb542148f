// Command fortioload is fortio's fixed-rate HTTP load engine (fortio.org/fortio
// fhttp and periodic, pinned in this module's go.mod) behind a small CLI that
// prints one JSON result. The fortio command itself cannot be built here: its
// CLI imports grol.io/grol, which the Go module proxy does not serve.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"fortio.org/fortio/fhttp"
	"fortio.org/log"
)

// result is what bench reads.
type result struct {
	URL       string             `json:"url"`
	TargetQPS float64            `json:"targetQPS"`
	ActualQPS float64            `json:"actualQPS"`
	Requests  int64              `json:"requests"`
	Errors    int64              `json:"errors"`
	RetCodes  map[int]int64      `json:"retCodes"`
	LatencyMS map[string]float64 `json:"latencyMs"`
	DurationS float64            `json:"durationSeconds"`
}

func main() {
	if err := run(os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "fortioload:", err)
		os.Exit(1)
	}
}

func run(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("fortioload", flag.ContinueOnError)
	qps := fs.Float64("qps", 1000, "target requests per second across all connections (0: as fast as possible)")
	conns := fs.Int("c", 16, "connections")
	dur := fs.Duration("t", 10*time.Second, "duration")
	host := fs.String("host", "", "Host header to send")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("want exactly one URL argument, got %d", fs.NArg())
	}
	log.SetLogLevelQuiet(log.Error)
	o := fhttp.HTTPRunnerOptions{}
	o.URL = fs.Arg(0)
	o.QPS = *qps
	o.NumThreads = *conns
	o.Duration = *dur
	o.Percentiles = []float64{50, 90, 99, 99.9}
	o.Out = io.Discard
	o.AllowInitialErrors = true
	if *host != "" {
		if err := o.AddAndValidateExtraHeader("Host: " + *host); err != nil {
			return fmt.Errorf("host header: %w", err)
		}
	}
	res, err := fhttp.RunHTTPTest(&o)
	if err != nil {
		return fmt.Errorf("run: %w", err)
	}
	r := result{
		URL: o.URL, TargetQPS: *qps, ActualQPS: res.ActualQPS,
		Requests: res.DurationHistogram.Count, RetCodes: res.RetCodes,
		LatencyMS: map[string]float64{}, DurationS: res.ActualDuration.Seconds(),
	}
	for code, n := range res.RetCodes {
		if code != 200 {
			r.Errors += n
		}
	}
	for _, p := range res.DurationHistogram.Percentiles {
		r.LatencyMS[fmt.Sprintf("p%g", p.Percentile)] = p.Value * 1000
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
