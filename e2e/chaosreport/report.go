// Package chaosreport records the results of meshgate's chaos scenarios
// (e2e/chaos_*_test.go) as JSON lines, one row per scenario and traffic path,
// and renders them as the markdown table kept in docs/reliability.md.
package chaosreport

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Row is the result of one traffic path of one chaos scenario.
type Row struct {
	// Level is the chaos level the scenario ran at: quick, full or soak.
	Level string `json:"level"`
	// Scenario is the test's name without its TestChaos prefix.
	Scenario string `json:"scenario"`
	// Path names the traffic measured, e.g. "gateway → sidecar → app".
	Path string `json:"path"`
	// Fault is what was done to the system, in words.
	Fault string `json:"fault"`
	// FaultSeconds is how long the fault lasted.
	FaultSeconds float64 `json:"faultSeconds"`
	// Rate is the target rate of the load, in requests per second, over
	// Connections keep-alive connections; the load ran for LoadSeconds.
	Rate        int     `json:"rate"`
	Connections int     `json:"connections"`
	LoadSeconds float64 `json:"loadSeconds"`
	// Sent and Failed count requests; a failure is a transport error, a
	// timeout, or an answer the scenario's check refuses (e.g. non-2xx).
	Sent   int64 `json:"sent"`
	Failed int64 `json:"failed"`
	// Failures counts the failed requests by outcome ("503", "timeout",
	// "upstream 503", ...).
	Failures map[string]int64 `json:"failures,omitempty"`
	// MaxFailed is the goal: at most this many failed requests; and, when
	// MaxRecoverySeconds is not 0, recovered within that time.
	MaxFailed          int64   `json:"maxFailed"`
	MaxRecoverySeconds float64 `json:"maxRecoverySeconds,omitempty"`
	// RecoverySeconds is the time from the end of the fault (its start with
	// RecoveryFromStart) to the first success after which no request
	// failed; nil when no request failed.
	RecoverySeconds   *float64 `json:"recoverySeconds,omitempty"`
	RecoveryFromStart bool     `json:"recoveryFromStart,omitempty"`
	// Unrecovered is set when the last request sent still failed.
	Unrecovered bool `json:"unrecovered,omitempty"`
	// Checks are the scenario's other findings, in words.
	Checks []string `json:"checks,omitempty"`
	// Errors are samples of the failures.
	Errors []string `json:"errors,omitempty"`
	// Pass is the scenario's verdict (every check of the test, not only
	// the load goal).
	Pass bool `json:"pass"`
	// Started is when the scenario started; Seconds how long it ran.
	Started time.Time `json:"started"`
	Seconds float64   `json:"seconds"`
	// Cores and Load1 (the 1-minute load average when the scenario
	// started) describe the machine.
	Cores int     `json:"cores"`
	Load1 float64 `json:"load1"`
}

// Append writes row as one JSON line at the end of the file at path,
// creating it. One write per row: rows of scenarios running in parallel do
// not interleave.
func Append(path string, row Row) error {
	b, err := json.Marshal(row)
	if err != nil {
		return fmt.Errorf("chaos result %s: %w", row.Scenario, err)
	}
	f, err := os.OpenFile(path, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("chaos results: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("chaos results %s: %w", path, err)
	}
	return f.Close()
}

// Read parses JSON lines of rows; name is used in errors.
func Read(name string, r io.Reader) ([]Row, error) {
	var rows []Row
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 {
			continue
		}
		var row Row
		if err := json.Unmarshal(text, &row); err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, line, err)
		}
		rows = append(rows, row)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return rows, nil
}

// Facts describe the run beside the table.
type Facts struct {
	// GoVersion, OS and Arch of the machine; Commit of the code (optional).
	GoVersion, OS, Arch, Commit string
}

// Table renders rows (all of one level) as a markdown paragraph of machine
// facts and a table, ordered by start time, one row per scenario and traffic
// path. It fails on mixed levels.
func Table(rows []Row, facts Facts) (string, error) {
	if len(rows) == 0 {
		return "", fmt.Errorf("no chaos results")
	}
	level := rows[0].Level
	rows = slices.Clone(rows)
	slices.SortStableFunc(rows, func(a, b Row) int {
		if c := a.Started.Compare(b.Started); c != 0 {
			return c
		}
		return strings.Compare(a.Scenario, b.Scenario)
	})
	start, end := rows[0].Started, rows[0].Started
	cores, loadMin, loadMax := 0, rows[0].Load1, rows[0].Load1
	scenarios, failed := map[string]bool{}, map[string]bool{}
	for _, r := range rows {
		if r.Level != level {
			return "", fmt.Errorf("results of two levels (%s, %s): run one level at a time", level, r.Level)
		}
		cores = max(cores, r.Cores)
		loadMin, loadMax = min(loadMin, r.Load1), max(loadMax, r.Load1)
		if e := r.Started.Add(time.Duration(r.Seconds * float64(time.Second))); e.After(end) {
			end = e
		}
		scenarios[r.Scenario] = true
		if !r.Pass {
			failed[r.Scenario] = true
		}
	}
	var b strings.Builder
	verdict := "all passed"
	if len(failed) > 0 {
		verdict = fmt.Sprintf("**%d failed**", len(failed))
	}
	fmt.Fprintf(&b, "Level `%s`, run %s UTC (%s); %d cores", level, start.UTC().Format("2006-01-02 15:04"),
		end.Sub(start).Round(time.Second), cores)
	if facts.OS != "" {
		fmt.Fprintf(&b, " (%s/%s)", facts.OS, facts.Arch)
	}
	fmt.Fprintf(&b, ", 1-minute load average %s at the scenarios' starts", loadRange(loadMin, loadMax))
	if facts.GoVersion != "" {
		fmt.Fprintf(&b, "; %s", facts.GoVersion)
	}
	if facts.Commit != "" {
		fmt.Fprintf(&b, "; commit `%s`", facts.Commit)
	}
	fmt.Fprintf(&b, ". %d scenarios, %s.\n\n", len(scenarios), verdict)
	b.WriteString("| scenario | traffic | fault | duration | rate | sent | failed | goal | time to recover | checks | result |\n")
	b.WriteString("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n")
	for i, r := range rows {
		// A scenario's fault and checks are shown on its first row only.
		fault, duration, checks := cell(r.Fault), seconds(r.FaultSeconds), cell(strings.Join(r.Checks, "; "))
		if i > 0 && rows[i-1].Scenario == r.Scenario && rows[i-1].Started.Equal(r.Started) {
			fault, duration, checks = "″", "″", "″"
		}
		result := "pass"
		if !r.Pass {
			result = "**FAIL**"
		}
		failedCell := strconv.FormatInt(r.Failed, 10)
		if r.Failed > 0 {
			failedCell += " (" + failures(r.Failures) + ")"
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %d | %s | %s | %s | %s | %s |\n",
			cell(r.Scenario), cell(r.Path), fault, duration, rate(r), r.Sent, failedCell,
			goal(r), recovery(r), checks, result)
	}
	return b.String(), nil
}

// rate is the target rate, and the rate achieved when it fell short by
// more than 10 %.
func rate(r Row) string {
	if r.LoadSeconds > 0 {
		if got := float64(r.Sent) / r.LoadSeconds; got < 0.9*float64(r.Rate) {
			return fmt.Sprintf("%d/s (got %.0f/s)", r.Rate, got)
		}
	}
	return fmt.Sprintf("%d/s", r.Rate)
}

func loadRange(lo, hi float64) string {
	if fmt.Sprintf("%.1f", lo) == fmt.Sprintf("%.1f", hi) {
		return fmt.Sprintf("%.1f", lo)
	}
	return fmt.Sprintf("%.1f–%.1f", lo, hi)
}

// failures lists failures by outcome, e.g. "503: 12, timeout: 3".
func failures(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s: %d", k, m[k])
	}
	return strings.Join(parts, ", ")
}

func goal(r Row) string {
	g := fmt.Sprintf("≤ %d failed", r.MaxFailed)
	if r.MaxRecoverySeconds > 0 {
		g += ", recovered in ≤ " + seconds(r.MaxRecoverySeconds)
	}
	return g
}

func recovery(r Row) string {
	switch {
	case r.Unrecovered:
		return "not recovered"
	case r.RecoverySeconds == nil:
		return "– (no failure)"
	case r.RecoveryFromStart:
		return seconds(*r.RecoverySeconds) + " from the fault's start"
	default:
		return seconds(*r.RecoverySeconds)
	}
}

func seconds(s float64) string {
	if s >= 10 {
		return fmt.Sprintf("%.0f s", s)
	}
	return fmt.Sprintf("%.1f s", s)
}

// cell escapes text for a markdown table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}

// Markers delimit the section of a level's table in a document.
func Markers(level string) (begin, end string) {
	return "<!-- chaos-results:" + level + ":begin -->", "<!-- chaos-results:" + level + ":end -->"
}

// ReplaceSection returns doc with the text between level's markers replaced
// by content (the markers stay). name is used in errors.
func ReplaceSection(name, doc, level, content string) (string, error) {
	begin, end := Markers(level)
	i := strings.Index(doc, begin)
	if i < 0 {
		return "", fmt.Errorf("%s: no %q marker for level %s", name, begin, level)
	}
	j := strings.Index(doc[i:], end)
	if j < 0 {
		return "", fmt.Errorf("%s: %q without %q", name, begin, end)
	}
	j += i
	if strings.Count(doc, begin) != 1 || strings.Count(doc, end) != 1 {
		return "", fmt.Errorf("%s: the markers of level %s appear more than once", name, level)
	}
	return doc[:i+len(begin)] + "\n" + strings.TrimRight(content, "\n") + "\n" + doc[j:], nil
}
