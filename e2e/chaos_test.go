package e2e

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/e2e/chaosreport"
)

// The chaos suite: faults through the real binary under steady load.
//
// Each scenario is a test named TestChaos<Name> (make chaos runs exactly
// those, one at a time; make test runs them at the quick level beside the
// other e2e tests). A scenario follows one pattern:
//
//	s := newChaos(t, "what the fault is")         // the level from $MESHGATE_CHAOS
//	c, m := startChaosFiles(t, "")                // or startChaosConsul(t): the deployment
//	m.startLoads(s)                               // fixed-rate load on both paths at s.level.rate
//	s.beginFault()
//	... the fault; s.hold() waits out s.level.fault ...
//	s.endFault()
//	... prove recovery (an edit served, a registration picked up); s.notef(...) ...
//	s.finish()                                     // stop loads, report, fail on loss
//
// finish logs requests sent, failed and the time to recover for every load
// and fails the test when a load lost more than its goal (l.maxFailed, 0
// by default) or, with l.maxRecovery set, took longer to recover. When
// $MESHGATE_CHAOS_RESULTS names a file, every scenario appends one JSON row
// per load to it (e2e/chaosreport), passed or not; make chaos turns them
// into the table of docs/reliability.md.
//
// Scenario registry. Implemented:
//
//   - TestChaosControlPlaneKill: control plane SIGKILLed for the fault
//     duration (files): gateway and sidecar→sidecar traffic lose nothing,
//     no proxy exits; after the restart the proxies reconnect and serve the
//     edit made while it was down, then an edit made after.
//   - TestChaosControlPlaneFailover: two control planes on Consul (state,
//     KV policy, catalog); the one the proxies use is SIGKILLed: they fail
//     over, an edit applied meanwhile is served, nothing is lost.
//   - TestChaosPolicyEdits: s.level.edits edits of the routes under load
//     (files): nothing lost, every edit served by the gateway and a sidecar.
//   - TestChaosConsulOutage: Consul stopped for the fault duration and
//     started again (files + Consul discovery, sidecars registered): nothing
//     lost; a registration made afterwards gets traffic from the caller's
//     sidecar and from the gateway.
//   - TestChaosCertificateRotation: certificateTTL at its minimum (1m) and
//     a root rotation (ca rotate begin, switch, finish) under load: nothing
//     lost; the new root in every trust bundle before it signs, every proxy
//     renewed from it, the old root dropped and traffic flowing on; every
//     proxy renews about every TTL/2 (each gap between "certificate
//     issued"/"certificate renewed" log lines within [TTL/4, 3·TTL/4]).
//   - TestChaosJoinTokenRevocation: certificateTTL 1m; two more callers of
//     orders, one's join token revoked (meshgate token revoke), the other's
//     identity (meshgate proxies revoke): their connections to the control
//     plane are closed and not let back, their renewals refused, and their
//     calls fail once their certificates expire (within one lifetime); the
//     two measured paths lose nothing.
//   - TestChaosControlPlaneRestartDuringConsulOutage (files + Consul
//     discovery): Consul stopped, the control plane SIGKILLed and started
//     again, Consul started ≥ 10 s later: nothing lost; the restarted control
//     plane pushes nothing until it has the catalog (/status and its log say
//     so), then serves on its own: traffic flows, an edit is served.
//   - TestChaosAppKilledBehindSidecar (Consul): the app of one of two orders
//     instances killed, its sidecar alive: the caller's path recovers within
//     10 s of the kill (the instance leaves rotation) and loses nothing
//     after; the app restarted, the instance returns.
//   - TestChaosSidecarSigterm (Consul): two orders instances; SIGTERM of
//     one orders sidecar (default drain delay): nothing lost; it leaves the
//     caller's endpoints, and its log shows the deregistration before its
//     listeners close.
//   - TestChaosSlowConnections: 2500 (quick) or 10,000 connections that
//     send nothing, to a gateway limited to 1000 (5000) per listener, for
//     the fault duration: nothing lost by the normal load; the gateway's
//     RSS grows by at most 10 KiB per held connection and at least a third
//     of that is given back after.
//
// To be added with the changes they prove, each the same pattern:
// startChaosFiles(t, extraPolicy) starts the two-path deployment with its
// policy in files, startChaosConsul(t) with its services in Consul (both on
// startMesh, deployments_test.go), m.startLoads(s) loads both paths,
// holdPorts keeps a stopped process's ports for its restart. The steps
// reproduce the faults as observed:
//
//   - RequestSmuggling: a corpus of ambiguous requests (CL+TE, obs-fold,
//     bare LF, bad chunk sizes) at the gateway in front of a raw backend that
//     records every byte: no smuggled request reaches it; obs-fold, bare LF
//     and bad chunk sizes get 400, CL+TE a response after which the
//     connection is closed.

// chaosLevel is how hard the chaos scenarios push, from $MESHGATE_CHAOS:
// quick (the default; part of make test), full (make chaos
// MESHGATE_CHAOS=full) or soak (make soak). $MESHGATE_CHAOS_RATE and
// $MESHGATE_CHAOS_FAULT override its rate and fault duration.
type chaosLevel struct {
	name    string
	rate    int           // requests per second, per traffic path
	fault   time.Duration // how long a fault lasts
	settle  time.Duration // at least this much load after a fault ends
	timeout time.Duration // per request
	edits   int           // policy edits of TestChaosPolicyEdits
	// certWatch is how long TestChaosCertificateRotation watches renewals;
	// 0: until every proxy has renewed once, from the new root (about
	// TTL/2). Longer than a TTL, the old root is dropped without --force.
	certWatch time.Duration
}

// chaosLevelNamed is the level of that name.
func chaosLevelNamed(name string) (chaosLevel, bool) {
	switch name {
	case "", "quick":
		return chaosLevel{name: "quick", rate: 100, fault: 4 * time.Second, settle: 2 * time.Second,
			timeout: 2 * time.Second, edits: 20}, true
	case "full":
		return chaosLevel{name: "full", rate: 200, fault: 20 * time.Second, settle: 5 * time.Second,
			timeout: 2 * time.Second, edits: 100, certWatch: 150 * time.Second}, true
	case "soak":
		return chaosLevel{name: "soak", rate: 300, fault: 60 * time.Second, settle: 10 * time.Second,
			timeout: 2 * time.Second, edits: 200, certWatch: 5 * time.Minute}, true
	}
	return chaosLevel{}, false
}

// chaosLevelFromEnv reads $MESHGATE_CHAOS, $MESHGATE_CHAOS_RATE and
// $MESHGATE_CHAOS_FAULT.
func chaosLevelFromEnv() (chaosLevel, error) {
	name := os.Getenv("MESHGATE_CHAOS")
	level, ok := chaosLevelNamed(name)
	if !ok {
		return level, fmt.Errorf("MESHGATE_CHAOS=%q: want quick, full or soak", name)
	}
	if v := os.Getenv("MESHGATE_CHAOS_RATE"); v != "" {
		rate, err := strconv.Atoi(v)
		if err != nil || rate <= 0 || rate > 10000 {
			return level, fmt.Errorf("MESHGATE_CHAOS_RATE=%q: want requests per second, 1-10000", v)
		}
		level.rate = rate
	}
	if v := os.Getenv("MESHGATE_CHAOS_FAULT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return level, fmt.Errorf("MESHGATE_CHAOS_FAULT=%q: want a positive duration such as 30s", v)
		}
		level.fault = d
	}
	return level, nil
}

// chaosScenario is one running chaos scenario.
type chaosScenario struct {
	t     *testing.T
	name  string // the test's name without TestChaos
	fault string // what is done, in words
	level chaosLevel
	// recoverFromStart measures the time to recover from the start of the
	// fault, for faults the system must route around while they last (a
	// dead app); by default it counts from the end of the fault.
	recoverFromStart bool
	started          time.Time
	load1            float64

	loads                []*rateLoad
	faultStart, faultEnd time.Time
	notes                []string
	finished             bool
	stats                []loadStats // per load, once finished
}

// newChaos starts a scenario whose fault is described by fault; the goal
// is no failed request. Its results are recorded when the test ends, even
// when it ends early.
func newChaos(t *testing.T, fault string) *chaosScenario {
	t.Helper()
	e2eOnly(t)
	level, err := chaosLevelFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	s := &chaosScenario{t: t, name: strings.TrimPrefix(t.Name(), "TestChaos"), fault: fault, level: level,
		started: time.Now(), load1: loadAverage()}
	t.Logf("chaos %s: level %s, %d req/s per path, faults of %s", s.name, level.name, level.rate, level.fault)
	// Registered first, so it runs last: after the loads stopped.
	t.Cleanup(s.record)
	return s
}

// load starts fixed-rate load on url at the level's rate; check judges
// each answer (statusOK: any 2xx). Its goal is no failed request; set
// maxFailed and maxRecovery on the load for another.
func (s *chaosScenario) load(path, url string, check loadCheck) *rateLoad {
	s.t.Helper()
	l := startRateLoad(s.t, path, url, s.level.rate, s.level.timeout, check)
	s.loads = append(s.loads, l)
	return l
}

// beginFault marks the start of the fault.
func (s *chaosScenario) beginFault() { s.faultStart = time.Now() }

// hold waits until the fault has lasted the level's fault duration: the
// fault itself, not a synchronisation.
func (s *chaosScenario) hold() {
	if d := s.level.fault - time.Since(s.faultStart); d > 0 {
		time.Sleep(d)
	}
}

// endFault marks the end of the fault: the time to recover counts from here.
func (s *chaosScenario) endFault() {
	s.faultEnd = time.Now()
	s.t.Logf("chaos %s: fault %q ended after %s", s.name, s.fault, s.faultEnd.Sub(s.faultStart).Round(time.Millisecond))
}

// waitTraffic waits until every load has had n successful requests sent
// since from: traffic flows on every path after an event (its failures, if
// any, are counted by finish).
func (s *chaosScenario) waitTraffic(what string, from time.Time, n int) {
	s.t.Helper()
	eventually(s.t, 30*time.Second, what, func() error {
		for _, l := range s.loads {
			if got := l.okSince(from); got < n {
				return fmt.Errorf("[%s] %d of %d successful requests", l.path, got, n)
			}
		}
		return nil
	})
}

// notef records a finding of the scenario (logged, and in its results row).
func (s *chaosScenario) notef(format string, args ...any) {
	s.t.Helper()
	note := fmt.Sprintf(format, args...)
	s.notes = append(s.notes, note)
	s.t.Logf("chaos %s: %s", s.name, note)
}

// finish keeps the load running for the level's settle time after the
// fault, stops it, logs what every load saw, and fails the test when a load
// lost more than its maxFailed requests, did not recover within its
// maxRecovery (if set), or could not keep its rate.
func (s *chaosScenario) finish() {
	s.t.Helper()
	if s.faultEnd.IsZero() {
		s.t.Fatal("chaos: finish before endFault")
	}
	if d := s.level.settle - time.Since(s.faultEnd); d > 0 {
		time.Sleep(d) // load observed after the fault: part of the measurement
	}
	s.collect()
	for i, l := range s.loads {
		st := s.stats[i]
		s.t.Logf("chaos %s [%s]: %d sent (%.0f/s of %d/s over %d connections), %d failed %v, time to recover %s (goal ≤ %d failed)",
			s.name, l.path, st.sent, float64(st.sent)/st.duration.Seconds(), l.rate, l.conns, st.failed, st.failures,
			recoveryText(st), l.maxFailed)
		if st.failed > l.maxFailed {
			s.t.Errorf("chaos %s [%s]: %d of %d requests failed (goal ≤ %d): %v; first: %s",
				s.name, l.path, st.failed, st.sent, l.maxFailed, st.failures, strings.Join(st.samples, " | "))
		}
		if l.maxRecovery > 0 && (!st.recovered || st.recovery > l.maxRecovery) {
			s.t.Errorf("chaos %s [%s]: time to recover %s, goal ≤ %s", s.name, l.path, recoveryText(st), l.maxRecovery)
		}
		// Zero failures mean nothing if the load hardly ran. (A loaded
		// machine lowers the rate achieved; that is reported, not failed.)
		if st.sent < st.expected/10 {
			s.t.Errorf("chaos %s [%s]: the load sent %d requests of the %d its rate asks for: the machine could not keep up",
				s.name, l.path, st.sent, st.expected)
		}
	}
	s.finished = true
}

// collect stops every load and keeps its stats (once).
func (s *chaosScenario) collect() {
	if s.stats != nil {
		return
	}
	from := s.faultEnd
	if s.recoverFromStart {
		from = s.faultStart
	}
	for _, l := range s.loads {
		s.stats = append(s.stats, l.stats(from))
	}
}

func recoveryText(st loadStats) string {
	switch {
	case !st.hasFailures:
		return "– (no failure)"
	case !st.recovered:
		return "never (the last request failed)"
	}
	return st.recovery.Round(time.Millisecond).String()
}

// record appends the scenario's rows to $MESHGATE_CHAOS_RESULTS (if set);
// it runs when the test ends.
func (s *chaosScenario) record() {
	s.collect()
	path := os.Getenv("MESHGATE_CHAOS_RESULTS")
	if path == "" {
		return
	}
	notes := s.notes
	if !s.finished {
		notes = append(notes, "ended early: see the test's errors")
	}
	faultEnd := s.faultEnd
	if faultEnd.IsZero() {
		faultEnd = time.Now()
	}
	var faultSeconds float64
	if !s.faultStart.IsZero() {
		faultSeconds = faultEnd.Sub(s.faultStart).Seconds()
	}
	for i, l := range s.loads {
		st := s.stats[i]
		row := chaosreport.Row{
			Level: s.level.name, Scenario: s.name, Path: l.path, Fault: s.fault, FaultSeconds: faultSeconds,
			Rate: l.rate, Connections: l.conns, LoadSeconds: st.duration.Seconds(), Sent: st.sent, Failed: st.failed, MaxFailed: l.maxFailed,
			MaxRecoverySeconds: l.maxRecovery.Seconds(), RecoveryFromStart: s.recoverFromStart, Unrecovered: !st.recovered,
			Checks: notes, Errors: st.samples, Pass: !s.t.Failed(), Started: s.started,
			Seconds: time.Since(s.started).Seconds(), Cores: runtime.NumCPU(), Load1: s.load1,
		}
		if st.failed > 0 {
			row.Failures = st.failures
		}
		if st.hasFailures {
			r := st.recovery.Seconds()
			row.RecoverySeconds = &r
		}
		if err := chaosreport.Append(path, row); err != nil {
			s.t.Errorf("chaos %s: %v", s.name, err)
		}
	}
}

// loadAverage is the 1-minute load average (0 where /proc/loadavg is not).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	fields := strings.Fields(string(b))
	if len(fields) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(fields[0], 64)
	return v
}
