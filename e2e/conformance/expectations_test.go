package conformance

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/yaml"
)

// The results expected of each test, checked in as expectations.yaml.
const (
	resultPass = "pass"
	resultFail = "fail"
	resultSkip = "skip" // not run: a feature meshgate does not claim yet
	// resultNotRun: the runner cannot run the test yet (the reason says what
	// it lacks); counted as a failure.
	resultNotRun = "notrun"
)

// expectation is one entry of expectations.yaml.
type expectation struct {
	Result string `json:"result"`
	// Reason says why a test fails, as measured.
	Reason string `json:"reason,omitempty"`
	// Needs is the issue that will make it pass (see issueTitles).
	Needs string `json:"needs,omitempty"`
}

type expectations map[string]expectation

// issueTitles are the open issues an expectation may name.
var issueTitles = map[string]string{
	"conformance": "Gateway API conformance with per-resource acceptance and status",
	"resilience":  "Traffic resilience: retries, timeouts, circuit breaking...",
	"edge":        "Edge protocols...",
	"policies":    "API gateway policies...",
	"transparent": "Transparent mesh: sidecars that capture traffic...",
}

func loadExpectations(path string) (expectations, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var exp expectations
	if err := yaml.UnmarshalStrict(data, &exp); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for name, e := range exp {
		switch {
		case e.Result != resultPass && e.Result != resultFail && e.Result != resultSkip && e.Result != resultNotRun:
			return nil, fmt.Errorf("%s: %s: result %q: want pass, fail, skip or notrun", path, name, e.Result)
		case (e.Result == resultFail || e.Result == resultNotRun) && e.Reason == "":
			return nil, fmt.Errorf("%s: %s: a failing test needs a reason", path, name)
		case e.Result != resultPass && issueTitles[e.Needs] == "":
			return nil, fmt.Errorf("%s: %s: needs %q: want one of conformance, resilience, edge, policies, transparent", path, name, e.Needs)
		}
	}
	return exp, nil
}

// row is one line of the results table.
type row struct {
	name, result, note string
}

// compare checks the outcome against the expectations: a regression (an
// expected pass that failed) is an error; a newly passing test is reported.
func compare(t *testing.T, selected []suite.ConformanceTest, exp expectations, got map[string]outcome) []row {
	var rows []row
	var newPasses []string
	for _, c := range selected {
		e := exp[c.ShortName]
		r := row{name: c.ShortName}
		switch {
		case e.Result == resultSkip:
			r.result, r.note = "SKIP", "needs: "+issueTitles[e.Needs]
		case e.Result == resultNotRun:
			r.result, r.note = "FAIL", "not run: "+e.Reason
		case got[c.ShortName] == outcomePass:
			r.result = "PASS"
			if e.Result != resultPass {
				newPasses = append(newPasses, c.ShortName)
			}
		default:
			r.result = "FAIL"
			r.note = e.Reason
			if e.Needs != "" {
				r.note += " (needs: " + issueTitles[e.Needs] + ")"
			}
			if e.Result == resultPass {
				t.Errorf("regression: %s passed before and fails now (the suite's messages are in the log)", c.ShortName)
				r.note = "regression"
			}
		}
		rows = append(rows, r)
	}
	if len(newPasses) > 0 {
		t.Logf("newly passing (record them as pass in expectations.yaml): %s", strings.Join(newPasses, ", "))
	}
	return rows
}

func printRows(t *testing.T, rows []row) {
	var b strings.Builder
	for _, r := range rows {
		fmt.Fprintf(&b, "  %-4s %-52s %s\n", r.result, r.name, r.note)
	}
	t.Logf("results:\n%s", b.String())
}

// writeResultsTable replaces the table between the level's markers in doc.
func writeResultsTable(doc, level string, rows []row) error {
	data, err := os.ReadFile(doc)
	if err != nil {
		return err
	}
	begin := fmt.Sprintf("<!-- conformance results (%s): begin -->", level)
	end := fmt.Sprintf("<!-- conformance results (%s): end -->", level)
	i, j := bytes.Index(data, []byte(begin)), bytes.Index(data, []byte(end))
	if i < 0 || j < i {
		return fmt.Errorf("%s has no %q ... %q markers", doc, begin, end)
	}
	counts := map[string]int{}
	var b strings.Builder
	b.WriteString(begin + "\n")
	b.WriteString("| test | result | why it fails / what it needs |\n| --- | --- | --- |\n")
	for _, r := range rows {
		counts[r.result]++
		fmt.Fprintf(&b, "| %s | %s | %s |\n", r.name, r.result, strings.ReplaceAll(r.note, "|", "\\|"))
	}
	fmt.Fprintf(&b, "\n%d passed, %d failed, %d skipped.\n", counts["PASS"], counts["FAIL"], counts["SKIP"])
	out := append(append([]byte{}, data[:i]...), b.String()...)
	out = append(out, data[j:]...)
	return os.WriteFile(doc, out, 0o644)
}
