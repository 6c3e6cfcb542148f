package chaosreport

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAppendAndRead(t *testing.T) {
	path := filepath.Join(t.TempDir(), "results.jsonl")
	recovery := 1.25
	want := []Row{
		{Level: "quick", Scenario: "ControlPlaneKill", Path: "gateway", Sent: 400, Pass: true},
		{Level: "quick", Scenario: "ConsulOutage", Path: "mesh", Sent: 10, Failed: 2,
			Failures: map[string]int64{"503": 2}, RecoverySeconds: &recovery},
	}
	for _, r := range want {
		if err := Append(path, r); err != nil {
			t.Fatal(err)
		}
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, err := Read(path, f)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[1].Failures["503"] != 2 || *got[1].RecoverySeconds != 1.25 || got[0].Sent != 400 {
		t.Fatalf("read back %+v", got)
	}
}

func TestReadNamesTheBadLine(t *testing.T) {
	_, err := Read("r.jsonl", strings.NewReader("{\"level\":\"quick\"}\n\n{oops\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "r.jsonl:3:") {
		t.Fatalf("error %v, want one naming r.jsonl:3", err)
	}
}

func TestTable(t *testing.T) {
	start := time.Date(2025, 12, 4, 16, 0, 0, 0, time.UTC)
	recovery := 2.5
	rows := []Row{
		{Level: "full", Scenario: "AppKilled", Path: "mesh", Fault: "app killed", FaultSeconds: 5, Rate: 200,
			Sent: 1000, Failed: 20, Failures: map[string]int64{"upstream 503": 20}, MaxFailed: 1000, MaxRecoverySeconds: 10,
			RecoverySeconds: &recovery, RecoveryFromStart: true, Pass: true, Started: start.Add(30 * time.Second), Cores: 2, Load1: 2},
		{Level: "full", Scenario: "PolicyEdits", Path: "gateway", Fault: "100 policy edits", FaultSeconds: 41.2, Rate: 200,
			Sent: 8000, Pass: true, Started: start.Add(time.Minute), Seconds: 60, Cores: 2, Load1: 3.14,
			Checks: []string{"every edit served", "median 300ms | max 1s"}},
		{Level: "full", Scenario: "ControlPlaneKill", Path: "mesh", Fault: "control plane SIGKILL", FaultSeconds: 20, Rate: 200,
			Sent: 5000, Pass: false, Checks: []string{"reconnected"}, Started: start, Seconds: 30, Cores: 2, Load1: 1.5},
		{Level: "full", Scenario: "ControlPlaneKill", Path: "gateway", Fault: "control plane SIGKILL", FaultSeconds: 20, Rate: 200,
			LoadSeconds: 50, Sent: 5000, Failed: 3, Failures: map[string]int64{"timeout": 1, "503": 2}, RecoverySeconds: &recovery,
			Started: start, Seconds: 30, Cores: 2, Load1: 1.5},
	}
	got, err := Table(rows, Facts{GoVersion: "go1.26", OS: "linux", Arch: "amd64", Commit: "abc123"})
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"Level `full`, run 2025-12-04 16:00 UTC (2m0s); 2 cores (linux/amd64), 1-minute load average 1.5–3.1",
		"commit `abc123`. 3 scenarios, **1 failed**.",
		"| AppKilled | mesh | app killed | 5.0 s | 200/s | 1000 | 20 (upstream 503: 20) | ≤ 1000 failed, recovered in ≤ 10 s | 2.5 s from the fault's start |  | pass |",
		"| ControlPlaneKill | mesh | control plane SIGKILL | 20 s | 200/s | 5000 | 0 | ≤ 0 failed | – (no failure) | reconnected | **FAIL** |\n" +
			"| ControlPlaneKill | gateway | ″ | ″ | 200/s (got 100/s) | 5000 | 3 (503: 2, timeout: 1) | ≤ 0 failed | 2.5 s | ″ | **FAIL** |",
		"| PolicyEdits | gateway | 100 policy edits | 41 s | 200/s | 8000 | 0 | ≤ 0 failed | – (no failure) | every edit served; median 300ms \\| max 1s | pass |",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("table lacks %q:\n%s", want, got)
		}
	}
	if strings.Index(got, "ControlPlaneKill") > strings.Index(got, "PolicyEdits") {
		t.Errorf("rows not in start order:\n%s", got)
	}
}

func TestTableRefusesMixedLevels(t *testing.T) {
	if _, err := Table([]Row{{Level: "quick"}, {Level: "soak"}}, Facts{}); err == nil {
		t.Fatal("mixed levels accepted")
	}
	if _, err := Table(nil, Facts{}); err == nil {
		t.Fatal("no rows accepted")
	}
}

func TestReplaceSection(t *testing.T) {
	begin, end := Markers("quick")
	fullBegin, fullEnd := Markers("full")
	doc := "# title\n" + begin + "\nold\n" + end + "\ntext\n" + fullBegin + "\nkept\n" + fullEnd + "\n"
	cases := []struct {
		name, doc, level, want, err string
	}{
		{"replaces its level only", doc, "quick",
			"# title\n" + begin + "\nnew table\n" + end + "\ntext\n" + fullBegin + "\nkept\n" + fullEnd + "\n", ""},
		{"missing level", doc, "soak", "", `doc.md: no "<!-- chaos-results:soak:begin -->" marker`},
		{"no end marker", begin + "\nx\n", "quick", "", "without"},
		{"twice", doc + begin + end, "quick", "", "more than once"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReplaceSection("doc.md", tc.doc, tc.level, "new table\n\n")
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("error %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v\nwant %q", got, err, tc.want)
			}
		})
	}
}
