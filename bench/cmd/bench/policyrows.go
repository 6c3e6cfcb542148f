package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// policyRow is one row of a section that measures one meshgate gateway
// under policies swapped over xDS between the rows (no restart).
type policyRow struct {
	name string
	// policy is the content of the section's policy file for this row; ""
	// removes the file.
	policy string
	// applied reports nil once the gateway (admin URL) serves the row's
	// policy, else what it serves.
	applied func(ctx context.Context, admin string) error
	// after, when set, runs once the row is measured (notes, say).
	after func(ctx context.Context, admin string)
	// headers are sent with every request of the row ("Name: value").
	headers []string
}

// measurePolicyRows measures the gateway c at max rate (wrk, tiny body)
// under each row's policy, written to path, adding one row to s per
// policyRow; a row that fails is noted and the others still run.
func (r *runner) measurePolicyRows(ctx context.Context, c *contender, s *section, workload, path string, rows []policyRow) error {
	var errs []error
	for _, v := range rows {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if v.policy == "" {
			if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
				return fmt.Errorf("policy file: %w", err)
			}
		} else if err := os.WriteFile(path, []byte(v.policy), 0o644); err != nil {
			return fmt.Errorf("policy file: %w", err)
		}
		if err := waitApplied(ctx, c.admin, v, 20*time.Second); err != nil {
			s.rows = append(s.rows, row{contender: v.name, note: "failed: " + oneLine(err)})
			errs = append(errs, fmt.Errorf("%s: %w", v.name, err))
			continue
		}
		if r.mode.warmup > 0 {
			if _, out, err := runWrkHeaders(ctx, c.h1+pathTiny, v.headers, r.conns, r.cores, r.mode.warmup); err != nil {
				return fmt.Errorf("warm-up: %w\n%s", err, out)
			}
		}
		resetPeakRSS(c.measured.pgid())
		before := sampleGroup(c.measured.pgid())
		start := time.Now()
		res, out, err := runWrkHeaders(ctx, c.h1+pathTiny, v.headers, r.conns, r.cores, r.mode.duration)
		elapsed := time.Since(start)
		switch {
		case err != nil && toolMissing(err):
			s.rows = append(s.rows, row{contender: v.name, note: "not run: " + oneLine(err)})
			continue
		case err != nil:
			s.rows = append(s.rows, row{contender: v.name, note: "failed: " + oneLine(err)})
			errs = append(errs, fmt.Errorf("%s: %w\n%s", v.name, err, out))
			continue
		}
		after := sampleGroup(c.measured.pgid())
		rw := row{contender: v.name, res: res, rssMiB: float64(after.peakRSS) / (1 << 20)}
		if n := requestsOf(res, elapsed); n > 0 {
			rw.cpuMsPer1k = (after.cpuSeconds - before.cpuSeconds) * 1000 / (n / 1000)
		}
		r.log.Info("measured", "workload", workload, "variant", v.name, "rps", int(res.rps), "p99ms", res.p99)
		s.rows = append(s.rows, rw)
		if v.after != nil {
			v.after(ctx, c.admin)
		}
	}
	return errors.Join(errs...)
}

// waitApplied polls until the gateway serves v's policy, until timeout.
func waitApplied(ctx context.Context, admin string, v policyRow, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		if last = v.applied(ctx, admin); last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return fmt.Errorf("gateway did not apply %q: %w", v.name, last)
}

// onOffPolicy is a workload that measures one meshgate gateway without a
// TrafficPolicy and with it, each row twice, alternating (on a shared
// machine the spread between the two runs of a row is the noise to read
// the difference against), the policy added and removed over xDS between
// the rows (no restart).
type onOffPolicy struct {
	workload string // the section's title
	file     string // the policy file's name under the work directory
	policy   string // the TrafficPolicy
	off, on  string // the rows' names
	// served reports whether the gateway at admin serves the policy;
	// what names it in errors.
	served func(ctx context.Context, admin string) (bool, error)
	what   string
	note   string // the section's note
	// headers are sent with every request of every row ("Name: value"),
	// the rows without the policy too: they differ by the policy alone.
	headers []string
}

// measureOnOff runs p.
func (r *runner) measureOnOff(ctx context.Context, env *meshgateEnv, p onOffPolicy) error {
	s := r.table.section(p.workload, p.off)
	path := filepath.Join(r.work, "policy", p.file)
	defer os.Remove(path)
	applied := func(on bool) func(context.Context, string) error {
		return func(ctx context.Context, admin string) error {
			got, err := p.served(ctx, admin)
			switch {
			case err != nil:
				return err
			case got != on:
				return fmt.Errorf("%s %v, want %v", p.what, got, on)
			}
			return nil
		}
	}
	rows := []policyRow{
		{name: p.off, applied: applied(false), headers: p.headers},
		{name: p.on, policy: p.policy, applied: applied(true), headers: p.headers},
		{name: p.off + " (again)", applied: applied(false), headers: p.headers},
		{name: p.on + " (again)", policy: p.policy, applied: applied(true), headers: p.headers},
	}
	c, err := r.startMeshgateGateway(ctx, env, "meshgate")
	if err != nil {
		if c != nil {
			c.stop()
		}
		return err
	}
	defer c.stop()
	err = r.measurePolicyRows(ctx, c, s, p.workload, path, rows)
	s.notes = append(s.notes, p.note+" "+
		"The rows run one after the other on a machine that may be shared: compare them within this run only.")
	return err
}
