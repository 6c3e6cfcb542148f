package conformance

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	"sigs.k8s.io/gateway-api/conformance"
	"sigs.k8s.io/gateway-api/conformance/tests"
	"sigs.k8s.io/gateway-api/conformance/utils/config"
	k8s "sigs.k8s.io/gateway-api/conformance/utils/kubernetes"
	"sigs.k8s.io/gateway-api/conformance/utils/suite"
	"sigs.k8s.io/gateway-api/pkg/features"
)

// gatewayClassName is the GatewayClass the runner installs, as an
// implementation's installation would.
const gatewayClassName = "meshgate"

// TestConformance runs the selected conformance tests (see selectTests) in a
// network namespace of their own and compares the outcome with
// expectations.yaml: a test expected to pass that fails is an error; a test
// expected to fail that passes is reported, to be recorded in the file.
func TestConformance(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the conformance suite against processes (skipped with -short)")
	}
	if os.Getenv(netnsEnv) != "" {
		runSuite(t)
		return
	}
	exp, err := loadExpectations("expectations.yaml")
	if err != nil {
		t.Fatal(err)
	}
	level := os.Getenv(levelEnv)
	if level == "" {
		level = "quick"
	}
	selected, err := selectTests(level, exp)
	if err != nil {
		t.Fatal(err)
	}
	env, err := buildBinaries(t)
	if err != nil {
		t.Fatal(err)
	}
	only, err := regexp.Compile(os.Getenv(runEnv))
	if err != nil {
		t.Fatalf("%s: %v", runEnv, err)
	}
	selected = slices.DeleteFunc(selected, func(c suite.ConformanceTest) bool { return !only.MatchString(c.ShortName) })
	var run []string
	for _, s := range selected {
		if r := exp[s.ShortName].Result; r != resultSkip && r != resultNotRun {
			run = append(run, s.ShortName)
		}
	}
	start := time.Now()
	got, err := runInNetns(t, env, run)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("conformance (%s): %d tests run in %s", level, len(run), time.Since(start).Round(time.Second))
	rows := compare(t, selected, exp, got)
	printRows(t, rows)
	if doc := os.Getenv(docEnv); doc != "" {
		if err := writeResultsTable(doc, level, rows); err != nil {
			t.Errorf("writing the results table: %v", err)
		}
	}
}

// selectTests: quick is the HTTPRoute tests of the core features (Gateway,
// HTTPRoute, ReferenceGrant) expected to pass, a regression check of a
// minute (the failing ones each wait for their timeouts); full is every
// HTTPRoute test, the GRPCRoute, ListenerSet, BackendTLSPolicy and mesh tests. Every test of the
// full selection must have an expectation.
func selectTests(level string, exp expectations) ([]suite.ConformanceTest, error) {
	core := []features.FeatureName{features.SupportGateway, features.SupportHTTPRoute, features.SupportReferenceGrant}
	var out []suite.ConformanceTest
	var missing []string
	for _, c := range tests.ConformanceTests {
		name := c.ShortName
		httpRoute := strings.HasPrefix(name, "HTTPRoute")
		other := strings.HasPrefix(name, "GRPC") || strings.HasPrefix(name, "Mesh") || strings.HasPrefix(name, "ListenerSet") ||
			strings.HasPrefix(name, "BackendTLSPolicy") || strings.HasPrefix(name, "TCPRoute") || strings.HasPrefix(name, "TLSRoute")
		if !httpRoute && !other {
			continue
		}
		e, ok := exp[name]
		if !ok {
			missing = append(missing, name)
			continue
		}
		switch level {
		case "quick":
			if !httpRoute || e.Result != resultPass || slices.ContainsFunc(c.Features, func(f features.FeatureName) bool { return !slices.Contains(core, f) }) {
				continue
			}
		case "full":
		default:
			return nil, fmt.Errorf("%s=%q: want quick or full", levelEnv, level)
		}
		out = append(out, c)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("expectations.yaml has no entry for %s: add one (pass, fail with a reason, or skip with the issue)", strings.Join(missing, ", "))
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ShortName < out[j].ShortName })
	return out, nil
}

// buildBinaries builds meshgate (unless MESHGATE_BIN names it) and the
// suite's echo backend, and returns the environment naming them.
func buildBinaries(t *testing.T) ([]string, error) {
	dir := t.TempDir()
	env := os.Environ()
	if os.Getenv("MESHGATE_BIN") == "" {
		bin := filepath.Join(dir, "meshgate")
		if err := goBuild("../..", bin, "./cmd/meshgate"); err != nil {
			return nil, fmt.Errorf("building meshgate: %w", err)
		}
		env = append(env, "MESHGATE_BIN="+bin)
	}
	echo := filepath.Join(dir, "echo-basic")
	if err := goBuild(".", echo, "sigs.k8s.io/gateway-api/conformance/echo-basic"); err != nil {
		return nil, fmt.Errorf("building the echo backend: %w", err)
	}
	return append(env, "MESHGATE_ECHO_BIN="+echo), nil
}

func goBuild(dir, out, pkg string) error {
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	return cmd.Run()
}

// outcome is a test's result in the run.
type outcome string

const (
	outcomePass outcome = "PASS"
	outcomeFail outcome = "FAIL"
)

var resultLine = regexp.MustCompile(`^\s*--- (PASS|FAIL|SKIP): TestConformance/(\w+) \(`)

// runInNetns runs this test binary again in a new network namespace with
// the tests to run, logs its output (to MESHGATE_CONFORMANCE_LOG when set)
// and returns each test's outcome. A test the suite skipped counts as
// failed: a selected test must run.
func runInNetns(t *testing.T, env, names []string) (map[string]outcome, error) {
	logPath := os.Getenv(logEnv)
	if logPath == "" {
		logPath = filepath.Join(t.TempDir(), "conformance.log")
	}
	logFile, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	cmd := exec.Command(os.Args[0], "-test.run", "^TestConformance$", "-test.v", "-test.parallel", "64", "-test.timeout", "30m")
	cmd.Env = append(env, netnsEnv+"=1", testsEnv+"="+strings.Join(names, ","))
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("running the suite in a new network namespace (needs root or CAP_SYS_ADMIN): %w", err)
	}
	got := map[string]outcome{}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logFile, line)
			if m := resultLine.FindStringSubmatch(line); m != nil {
				o := outcomeFail
				if m[1] == "PASS" {
					o = outcomePass
				}
				got[m[2]] = o
				fmt.Printf("conformance: %-4s %s\n", o, m[2])
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	waitErr := cmd.Wait()
	pw.Close()
	wg.Wait()
	for _, n := range names {
		if _, ok := got[n]; !ok {
			return got, fmt.Errorf("the suite ended (%v) without a result for %s; see %s", waitErr, n, logPath)
		}
	}
	return got, nil
}

// runSuite runs in the network namespace: it starts the world, installs
// the GatewayClass, applies the suite's base (and mesh) manifests and runs
// the tests named in MESHGATE_CONFORMANCE_TESTS, the parallel ones in
// parallel, as the suite does.
func runSuite(t *testing.T) {
	byName := map[string]suite.ConformanceTest{}
	for _, c := range tests.ConformanceTests {
		byName[c.ShortName] = c
	}
	var run []suite.ConformanceTest
	mesh := false
	for _, n := range strings.Split(os.Getenv(testsEnv), ",") {
		if n == "" {
			continue
		}
		c, ok := byName[n]
		if !ok {
			t.Fatalf("no conformance test %q", n)
		}
		run = append(run, c)
		mesh = mesh || slices.Contains(c.Features, features.SupportMesh)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := newWorld(t, ctx)
	execConfig := &rest.Config{Host: w.execServer(ctx)}
	clientset, err := kubernetes.NewForConfig(execConfig)
	if err != nil {
		t.Fatal(err)
	}

	s, err := suite.NewConformanceTestSuite(suite.ConformanceOptions{
		ConfigurableOptions: suite.ConfigurableOptions{
			GatewayClassName:           gatewayClassName,
			MeshName:                   "meshgate",
			EnableAllSupportedFeatures: true, // which tests run is the runner's choice
			AllowCRDsMismatch:          true, // the fake cluster has no CRDs
			CleanupTestResources:       true,

			TimeoutConfig: timeouts(),
		},
		Client:       w.client,
		Clientset:    clientset, // for the mesh tests' exec (execServer)
		RestConfig:   execConfig,
		ManifestFS:   []fs.FS{&conformance.Manifests},
		RoundTripper: nil,
	})
	if err != nil {
		t.Fatalf("conformance suite: %v", err)
	}
	s.ControllerName = controllerName
	s.Applier.ManifestFS = s.ManifestFS
	s.Applier.GatewayClass = gatewayClassName
	s.Applier.ControllerName = controllerName

	gc := &gatewayv1.GatewayClass{ObjectMeta: metav1.ObjectMeta{Name: gatewayClassName},
		Spec: gatewayv1.GatewayClassSpec{ControllerName: controllerName}}
	if err := w.client.Create(ctx, gc); err != nil {
		t.Fatalf("installing the GatewayClass: %v", err)
	}
	s.Applier.MustApplyWithCleanup(t, w.client, s.TimeoutConfig, s.BaseManifests, false)
	// The certificates of the HTTPS listeners, which the suite's Setup
	// creates with the base manifests (the runner applies them itself).
	certs := []client.Object{
		k8s.MustCreateSelfSignedCertSecret(t, suite.WebBackendNamespace, "certificate", []string{"*"}),
		k8s.MustCreateSelfSignedCertSecret(t, suite.InfrastructureNamespace, "tls-validity-checks-certificate", []string{"*", "*.org", "*.wildcard.org"}),
	}
	// The CA of the BackendTLSPolicy tests and the certificate it signs,
	// which the suite's tls-backend (and the TLS echo of the TLSRoute tests)
	// serves, as the suite's Setup makes them.
	ca, caCert, caKey := k8s.MustCreateCACertConfigMap(t, suite.InfrastructureNamespace, "tls-checks-ca-certificate")
	certs = append(certs, ca, k8s.MustCreateCASignedCertSecret(t, suite.InfrastructureNamespace, "tls-checks-certificate",
		[]string{"abc.example.com", "spiffe://abc.example.com/test-identity", "other.example.com"}, caCert, caKey),
		// The TLSRoute tests' passthrough backend serves this one.
		k8s.MustCreateCASignedCertSecret(t, suite.InfrastructureNamespace, "tls-passthrough-checks-certificate", []string{"abc.example.com"}, caCert, caKey),
		// The TLSRoute tests' listeners in mode Terminate present this one.
		k8s.MustCreateCASignedCertSecret(t, suite.InfrastructureNamespace, "tls-terminate-checks-certificate", []string{"tls.example.com"}, caCert, caKey))
	// Another CA, that the tls-backend's certificate does not chain to.
	mismatch, _, _ := k8s.MustCreateCACertConfigMap(t, suite.InfrastructureNamespace, "mismatch-ca-certificate")
	certs = append(certs, mismatch)
	s.Applier.MustApplyObjectsWithCleanup(t, w.client, s.TimeoutConfig, certs, false)
	if mesh {
		s.Applier.MustApplyWithCleanup(t, w.client, s.TimeoutConfig, s.MeshManifests, false)
	}
	w.waitSynced(ctx)
	for _, c := range run {
		// The tests the suite marks Parallel run in parallel, the others
		// one at a time, as the suite runs them (forcing all in parallel
		// makes some disturb others: their routes share a Gateway).
		t.Run(c.ShortName, func(t *testing.T) { c.Run(t, s) })
	}
}

// timeouts are the suite's, shortened: meshgate's status is written within
// a sync of a change, so a condition not there after seconds never comes;
// long waits would only make failing tests slow.
func timeouts() config.TimeoutConfig {
	c := config.DefaultTimeoutConfig()
	short := 20 * time.Second
	c.GatewayMustHaveAddress = short
	c.GatewayMustHaveCondition = short
	c.GatewayStatusMustHaveListeners = short
	c.GatewayListenersMustHaveConditions = short
	c.GWCMustBeAccepted = short
	c.HTTPRouteMustNotHaveParents = short
	c.HTTPRouteMustHaveCondition = short
	c.RouteMustHaveParents = short
	c.NamespacesMustBeReady = short
	c.LatestObservedGenerationSet = short
	c.MaxTimeToConsistency = 30 * time.Second
	c.RequestTimeout = 5 * time.Second
	return c
}
