// Command chaostable turns the results of a chaos run (JSON lines written by
// the e2e chaos scenarios to $MESHGATE_CHAOS_RESULTS) into a markdown table,
// prints it, and with -doc rewrites the section of that level in the
// document (between <!-- chaos-results:LEVEL:begin --> and its end marker).
//
//	go run ./e2e/chaosreport/cmd/chaostable -results chaos-results.jsonl -doc docs/reliability.md
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/meshgate/meshgate/e2e/chaosreport"
)

func main() {
	results := flag.String("results", "chaos-results.jsonl", "the JSON lines written by the chaos scenarios")
	doc := flag.String("doc", "", "a markdown file whose section for the run's level is rewritten (none: print only)")
	flag.Parse()
	if err := run(*results, *doc); err != nil {
		fmt.Fprintln(os.Stderr, "chaostable:", err)
		os.Exit(1)
	}
}

func run(resultsPath, docPath string) error {
	f, err := os.Open(resultsPath)
	if err != nil {
		return fmt.Errorf("%w (did any chaos scenario run?)", err)
	}
	rows, err := chaosreport.Read(resultsPath, f)
	f.Close()
	if err != nil {
		return err
	}
	if len(rows) == 0 {
		return errors.New(resultsPath + ": no results (did any chaos scenario run?)")
	}
	table, err := chaosreport.Table(rows, chaosreport.Facts{
		GoVersion: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH, Commit: commit(),
	})
	if err != nil {
		return fmt.Errorf("%s: %w", resultsPath, err)
	}
	fmt.Println(table)
	if docPath == "" {
		return nil
	}
	old, err := os.ReadFile(docPath)
	if err != nil {
		return err
	}
	updated, err := chaosreport.ReplaceSection(docPath, string(old), rows[0].Level, table)
	if err != nil {
		return err
	}
	if err := os.WriteFile(docPath, []byte(updated), 0o644); err != nil {
		return err
	}
	fmt.Printf("the %s table of %s is rewritten\n", rows[0].Level, docPath)
	return nil
}

// commit names the checked-out code ("" outside a git work tree).
func commit() string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "git", "describe", "--always", "--dirty").Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}
