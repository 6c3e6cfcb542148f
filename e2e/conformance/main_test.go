// Package conformance runs the Gateway API conformance suite
// (sigs.k8s.io/gateway-api/conformance, its HTTPRoute, GRPCRoute and mesh
// tests) against the real meshgate binary.
//
// The suite's own test functions run unchanged. Their Kubernetes client is
// controller-runtime's fake client, which the runner keeps in sync with
// meshgate: the objects the suite applies are translated into meshgate policy
// files (Services, with the Deployments they select or the pods their
// EndpointSlices list, become meshgate Services whose endpoints are echo
// backends the runner starts on loopback; Gateway API documents are passed as
// they are), and meshgate's view is written back as status.
//
// TestConformance (the only test) builds meshgate and the suite's echo
// backend, then runs this test binary again inside a network namespace of
// its own (so that Gateways listen on the manifests' fixed ports, 80, 8080,
// ..., without colliding with anything), where TestSuite runs the selected
// conformance tests. TestConformance reads their outcome, prints one line per
// test, compares it with expectations.yaml and, with
// MESHGATE_CONFORMANCE_DOC set, rewrites the results table of that file
// (docs/conformance.md).
//
// This is its own Go module, so that client-go and controller-runtime stay
// out of meshgate's go.mod; it drives the built binary only.
package conformance

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"testing"
)

// Environment of the run.
const (
	// netnsEnv marks the test binary re-executed inside its own network
	// namespace, where TestSuite runs.
	netnsEnv = "MESHGATE_CONFORMANCE_NETNS"
	// levelEnv is quick (default: the HTTPRoute core tests) or full.
	levelEnv = "MESHGATE_CONFORMANCE"
	// runEnv narrows the selection to the tests whose name matches this
	// regular expression (for debugging one test).
	runEnv = "MESHGATE_CONFORMANCE_RUN"
	// testsEnv lists the tests TestSuite runs, comma-separated.
	testsEnv = "MESHGATE_CONFORMANCE_TESTS"
	// docEnv names the Markdown file whose results table is rewritten.
	docEnv = "MESHGATE_CONFORMANCE_DOC"
	// logEnv names the file that receives the full log of the suite.
	logEnv = "MESHGATE_CONFORMANCE_LOG"
)

// binaries are the programs the runner starts.
type binaries struct {
	meshgate string // MESHGATE_BIN, or built from ../..
	echo     string // the suite's echo-basic backend, built from the module
}

// bins is set once by TestMain or TestConformance before it is read.
var bins binaries

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Getenv(netnsEnv) != "" {
		// Inside the namespace: only the loopback interface, down until now.
		if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "conformance: bringing up lo in the network namespace: %v: %s\n", err, out)
			os.Exit(2)
		}
		bins = binaries{meshgate: os.Getenv("MESHGATE_BIN"), echo: os.Getenv("MESHGATE_ECHO_BIN")}
	}
	os.Exit(m.Run())
}
