package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of utime and stime in /proc/PID/stat. It is
// 100 on every Linux architecture Go supports.
const clockTicks = 100

// proc is a process the harness started in its own process group, so that it
// and all its children (nginx workers...) are stopped together.
type proc struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// procGroup tracks every process the harness started, to stop them all on
// exit or on a signal.
type procGroup struct {
	mu    sync.Mutex
	procs []*proc
	dir   string
}

// start runs bin with args in a new process group; output goes to
// <dir>/<name>.log.
func (g *procGroup) start(name, bin string, args []string, env []string) (*proc, error) {
	logPath := filepath.Join(g.dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("log file for %s: %w", name, err)
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &proc{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	g.mu.Lock()
	g.procs = append(g.procs, p)
	g.mu.Unlock()
	return p, nil
}

// stopAll stops every process still running, newest first.
func (g *procGroup) stopAll() {
	g.mu.Lock()
	procs := g.procs
	g.procs = nil
	g.mu.Unlock()
	for i := len(procs) - 1; i >= 0; i-- {
		procs[i].stop()
	}
}

// pgid is the process group of p (its own pid).
func (p *proc) pgid() int { return p.cmd.Process.Pid }

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the whole group, then SIGKILL after a grace period.
func (p *proc) stop() {
	if p.exited() {
		_ = syscall.Kill(-p.pgid(), syscall.SIGKILL) // orphans of the group, if any
		return
	}
	_ = syscall.Kill(-p.pgid(), syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.pgid(), syscall.SIGKILL)
		<-p.done
	}
	_ = syscall.Kill(-p.pgid(), syscall.SIGKILL)
}

// tail returns the last lines of the process log, for error messages.
func (p *proc) tail() string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 15 {
		lines = lines[len(lines)-15:]
	}
	return strings.Join(lines, "\n")
}

// groupPIDs lists the processes in process group pgid.
func groupPIDs(pgid int) []int {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		if st.pgrp == pgid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stat is the part of /proc/PID/stat the harness uses.
type stat struct {
	pgrp         int
	utime, stime uint64
}

// readStat parses /proc/PID/stat; the command name may hold spaces and
// parentheses, so fields are counted after the last ')'.
func readStat(pid int) (stat, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return stat{}, err
	}
	return parseStat(string(b))
}

func parseStat(s string) (stat, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return stat{}, errors.New("stat: no command name")
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state): pgrp is field 5, utime 14, stime 15.
	if len(f) < 13 {
		return stat{}, fmt.Errorf("stat: %d fields after the command name", len(f))
	}
	pgrp, err1 := strconv.Atoi(f[2])
	ut, err2 := strconv.ParseUint(f[11], 10, 64)
	stt, err3 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2, err3); err != nil {
		return stat{}, fmt.Errorf("stat: %w", err)
	}
	return stat{pgrp: pgrp, utime: ut, stime: stt}, nil
}

// vmHWM returns the peak resident set size of pid in bytes.
func vmHWM(pid int) uint64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	return parseVmHWM(string(b))
}

func parseVmHWM(status string) uint64 {
	for _, line := range strings.Split(status, "\n") {
		rest, ok := strings.CutPrefix(line, "VmHWM:")
		if !ok {
			continue
		}
		f := strings.Fields(rest)
		if len(f) < 1 {
			return 0
		}
		kb, err := strconv.ParseUint(f[0], 10, 64)
		if err != nil {
			return 0
		}
		return kb * 1024
	}
	return 0
}

// usage is CPU time and peak memory of a process group.
type usage struct {
	cpuSeconds float64
	peakRSS    uint64 // sum of VmHWM over the group's processes
}

// sampleGroup reads the CPU time and peak RSS of every process of a group.
func sampleGroup(pgid int) usage {
	var u usage
	for _, pid := range groupPIDs(pgid) {
		st, err := readStat(pid)
		if err != nil {
			continue
		}
		u.cpuSeconds += float64(st.utime+st.stime) / clockTicks
		u.peakRSS += vmHWM(pid)
	}
	return u
}

// resetPeakRSS resets VmHWM of every process of a group to its current RSS
// (clear_refs 5), so the next sample's peak covers only what follows.
func resetPeakRSS(pgid int) {
	for _, pid := range groupPIDs(pgid) {
		_ = os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", pid), []byte("5"), 0)
	}
}

// freeAddr returns a loopback address whose port was free a moment ago.
func freeAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// waitHTTP polls url until it answers 200 (with the given Host header when
// set), the process exits, or the timeout passes.
func waitHTTP(ctx context.Context, url, host string, timeout time.Duration, procs ...*proc) error {
	client := &http.Client{Timeout: time.Second}
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		for _, p := range procs {
			if p.exited() {
				return fmt.Errorf("%s exited while waiting for %s:\n%s", p.name, url, p.tail())
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return fmt.Errorf("request %s: %w", url, err)
		}
		if host != "" {
			req.Host = host
		}
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Errorf("status %d", resp.StatusCode)
		} else {
			last = err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("%s not ready after %s: %v", url, timeout, last)
}

// selfPID is this process's id.
func selfPID() int { return os.Getpid() }

// rssParts is a process's resident memory split by kind (MiB): anonymous
// (heap, stacks: its own) and file-backed (the mapped binary: shared with
// every process running it, and reclaimable).
type rssParts struct{ total, anon, file float64 }

// rssOf reads VmRSS, RssAnon and RssFile of pid; zero when unreadable.
func rssOf(pid int) rssParts {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return rssParts{}
	}
	var p rssParts
	for _, line := range strings.Split(string(b), "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		kb, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(val), " kB"), 64)
		if err != nil {
			continue
		}
		switch key {
		case "VmRSS":
			p.total = kb / 1024
		case "RssAnon":
			p.anon = kb / 1024
		case "RssFile":
			p.file = kb / 1024
		}
	}
	return p
}
