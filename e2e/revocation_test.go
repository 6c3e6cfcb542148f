package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// revocationPolicy: orders behind a sidecar, called by frontend, billing
// and web, each behind its own sidecar, with the shortest certificate
// lifetime.
const revocationPolicy = `
apiVersion: meshgate.dev/v1alpha1
kind: MeshConfig
metadata: {name: mesh}
spec:
  certificateTTL: 1m
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: orders}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${orders-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: frontend}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${frontend-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: billing}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${billing-in}", sidecar: true}]
---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: web}
spec:
  ports: [{port: 80}]
  endpoints: [{address: "${web-in}", sidecar: true}]
`

// revocationStatus is what the test reads of /status.
type revocationStatus struct {
	Proxies []struct {
		ID           string    `json:"id"`
		SPIFFEID     string    `json:"spiffeID"`
		CertNotAfter time.Time `json:"certNotAfter"`
		Enrolment    string    `json:"enrolment"`
		TokenID      string    `json:"tokenID"`
	} `json:"proxies"`
}

// callLoop makes an app call a service through its sidecar about 20 times a
// second and records when calls succeeded and failed.
type callLoop struct {
	stop chan struct{}
	done chan struct{}

	mu        sync.Mutex
	ok        int
	failed    []string
	lastOK    time.Time
	firstFail time.Time
}

func startCalls(t *testing.T, app, svc string) *callLoop {
	l := &callLoop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		tick := time.NewTicker(50 * time.Millisecond) // pacing, not synchronisation
		defer tick.Stop()
		for {
			select {
			case <-l.stop:
				return
			case <-tick.C:
			}
			code, err := callStatus(app, "GET", svc, "/x")
			now := time.Now()
			l.mu.Lock()
			if err == nil && code == 200 {
				l.ok++
				l.lastOK = now
			} else {
				if l.firstFail.IsZero() {
					l.firstFail = now
				}
				l.failed = append(l.failed, fmt.Sprintf("%s: %d %v", now.Format("15:04:05.000"), code, err))
			}
			l.mu.Unlock()
		}
	}()
	t.Cleanup(l.halt)
	return l
}

func (l *callLoop) halt() {
	select {
	case <-l.stop:
	default:
		close(l.stop)
	}
	<-l.done
}

// state returns the successes, failures, last success and first failure.
func (l *callLoop) state() (ok int, failed []string, lastOK, firstFail time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, append([]string(nil), l.failed...), l.lastOK, l.firstFail
}

// TestRevocationEvictsProxies: with a one-minute certificate lifetime and
// light traffic from three callers to orders, revoking the join token of
// one caller (frontend) and the identity of another (billing) closes their
// connections to the control plane (their xDS streams) at once and for good (meshgate proxies no longer lists them),
// refuses their renewals, and, once their certificates have expired, their
// calls fail; the third caller (web), whose certificates rotate every 30 s
// meanwhile, loses no request.
func TestRevocationEvictsProxies(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("mesh.yaml", revocationPolicy)
	c.startControlPlane()
	c.sidecar("orders", c.app("orders-app", "orders", "v1", ""), c.addr("orders-in"), c.addr("orders-out"))
	sidecars := map[string]*proc{}
	apps := map[string]string{}
	for _, svc := range []string{"frontend", "billing", "web"} {
		out := c.addr(svc + "-out")
		app := c.app(svc+"-app", svc, "v1", out)
		apps[svc] = "http://" + app
		sidecars[svc] = c.sidecar(svc, app, c.addr(svc+"-in"), out)
	}
	loops := map[string]*callLoop{}
	for svc, app := range apps {
		eventually(t, 15*time.Second, svc+" reaches orders", func() error {
			code, err := callStatus(app, "GET", "orders", "/x")
			if err == nil && code != 200 {
				err = fmt.Errorf("upstream status %d", code)
			}
			return err
		})
		loops[svc] = startCalls(t, app, "orders")
	}

	node := func(svc string) string { return "sidecar~" + svc + "~" + c.addr(svc+"-in") }
	var st revocationStatus
	if err := adminGet(c.admin, c.adminToken(), "/status", &st); err != nil {
		t.Fatal(err)
	}
	var frontendToken string
	for _, p := range st.Proxies {
		if p.ID == node("frontend") {
			frontendToken = p.TokenID
		}
	}
	if frontendToken == "" {
		t.Fatalf("no token id for %s in /status: %+v", node("frontend"), st.Proxies)
	}

	// Each closes the revoked sidecar's connection to the control plane
	// (and one of a renewal, should it be under way).
	closedSome := regexp.MustCompile(`closed [12] connection`)
	out, err := c.cli("token", "revoke", frontendToken)
	if err != nil || !closedSome.MatchString(out) {
		t.Fatalf("token revoke: %v\n%s", err, out)
	}
	out, err = c.cli("proxies", "revoke", "--service", "billing")
	if err != nil || !closedSome.MatchString(out) {
		t.Fatalf("proxies revoke --service billing: %v\n%s", err, out)
	}
	// Their last certificates were issued before now: they expire within a
	// lifetime.
	latestExpiry := time.Now().Add(time.Minute)

	// The revoking command returns once their xDS streams are closed.
	if err := adminGet(c.admin, c.adminToken(), "/status", &st); err != nil {
		t.Fatal(err)
	}
	for _, p := range st.Proxies {
		for _, svc := range []string{"frontend", "billing"} {
			if p.ID == node(svc) {
				t.Errorf("%s still connected right after its revocation", p.ID)
			}
		}
	}
	t.Logf("revoked at %s; their certificates expire by %s", time.Now().Format("15:04:05.000"), latestExpiry.Format("15:04:05.000"))

	// Both are refused when they renew (at half their lifetime, within
	// about 33 s) and when they reconnect to xDS.
	for _, svc := range []string{"frontend", "billing"} {
		eventually(t, 45*time.Second, svc+"'s renewal refused", func() error {
			if !strings.Contains(sidecars[svc].out.String(), "refused to renew this proxy's certificate") {
				return fmt.Errorf("%s has not been refused a renewal", svc)
			}
			return nil
		})
	}

	// Once their certificates have expired their calls fail, and keep
	// failing.
	for _, svc := range []string{"frontend", "billing"} {
		eventually(t, time.Until(latestExpiry)+20*time.Second, svc+"'s calls fail", func() error {
			code, err := callStatus(apps[svc], "GET", "orders", "/x")
			if err == nil && code == 200 {
				return fmt.Errorf("%s still reaches orders", svc)
			}
			return nil
		})
	}
	time.Sleep(time.Second) // let the loops record calls after the expiry
	for _, svc := range []string{"frontend", "billing"} {
		ok, failed, lastOK, firstFail := loops[svc].state()
		t.Logf("%s: %d calls succeeded, %d failed; last success %s, first failure %s", svc, ok, len(failed),
			lastOK.Format("15:04:05.000"), firstFail.Format("15:04:05.000"))
		// (A call completing as the certificate expires is recorded a
		// moment later.)
		if lastOK.After(latestExpiry.Add(time.Second)) {
			t.Errorf("%s's call succeeded at %s, after its certificate expired (by %s)", svc, lastOK, latestExpiry)
		}
	}

	// Still evicted: not reconnected to xDS.
	out, err = c.cli("proxies")
	if err != nil {
		t.Fatal(err)
	}
	for _, svc := range []string{"frontend", "billing"} {
		if strings.Contains(out, node(svc)) {
			t.Errorf("meshgate proxies lists %s after its revocation:\n%s", node(svc), out)
		}
	}
	for _, svc := range []string{"orders", "web"} {
		if !strings.Contains(out, node(svc)) {
			t.Errorf("meshgate proxies lost %s:\n%s", node(svc), out)
		}
	}

	// The bystander lost nothing, across two renewals of every certificate.
	loops["web"].halt()
	ok, failed, _, _ := loops["web"].state()
	t.Logf("web: %d calls succeeded, %d failed", ok, len(failed))
	if len(failed) > 0 {
		t.Errorf("web: %d of %d calls failed, first: %v", len(failed), ok+len(failed), failed[:min(5, len(failed))])
	}
}

// TestRevocationAcrossReplicas: two control planes share one Consul; a
// gateway connected to the second is revoked through the first, which
// closes no connection of its own: the second sees the revocation in
// Consul, closes the gateway's connection (its xDS stream) and refuses the
// stream when the gateway reconnects.
func TestRevocationAcrossReplicas(t *testing.T) {
	t.Parallel()
	consul := startConsul(t)
	c := newCluster(t)
	keyFile := filepath.Join(t.TempDir(), "state.key")
	var key [32]byte
	_, _ = rand.Read(key[:])
	if err := os.WriteFile(keyFile, []byte(hex.EncodeToString(key[:])), 0o600); err != nil {
		t.Fatal(err)
	}
	replicas := make([]*haReplica, 2)
	for i := range replicas {
		r := &haReplica{xds: freeAddr(t), admin: freeAddr(t), dataDir: t.TempDir()}
		r.proc = start(t, fmt.Sprintf("controlplane-%d", i), "controlplane", "--store", "consul", "--consul", consul.addr,
			"--state-key-file", keyFile, "--data-dir", r.dataDir, "--xds-address", r.xds, "--admin-address", r.admin, "--log-level", "debug")
		replicas[i] = r
	}
	eventually(t, 30*time.Second, "replicas up", func() error {
		for _, r := range replicas {
			b, err := os.ReadFile(filepath.Join(r.dataDir, "admin-token"))
			if err != nil {
				return err
			}
			var s cpStatus
			if err := adminGet(r.admin, strings.TrimSpace(string(b)), "/status", &s); err != nil {
				return err
			}
		}
		return nil
	})
	cli := func(r *haReplica, args ...string) (string, error) {
		c.admin, c.dataDir = r.admin, r.dataDir
		return c.cli(args...)
	}
	connected := func(r *haReplica) (string, error) { return cli(r, "proxies") }

	tok, err := cli(replicas[0], "token", "create", "--service", "edge", "--ttl", "1h")
	if err != nil {
		t.Fatal(err)
	}
	gw := start(t, "gateway edge", "gateway", "--name", "edge", "--xds", replicas[1].xds,
		"--admin", c.addr("gateway-admin-edge"), "--token", strings.TrimSpace(tok), "--log-level", "debug")
	eventually(t, 15*time.Second, "the gateway connected to replica 1", func() error {
		out, err := connected(replicas[1])
		if err == nil && !strings.Contains(out, "gateway~edge~") {
			err = fmt.Errorf("not listed:\n%s", out)
		}
		return err
	})

	out, err := cli(replicas[0], "proxies", "revoke", "--service", "edge")
	if err != nil || !strings.Contains(out, "closed 0 connection") {
		t.Fatalf("proxies revoke on replica 0: %v\n%s", err, out)
	}
	eventually(t, 15*time.Second, "replica 1 closed the gateway's connection", func() error {
		out, err := connected(replicas[1])
		if err == nil && strings.Contains(out, "gateway~edge~") {
			err = fmt.Errorf("still listed:\n%s", out)
		}
		return err
	})
	eventually(t, 15*time.Second, "the gateway refused on reconnecting", func() error {
		if !strings.Contains(gw.out.String(), "revoked") {
			return fmt.Errorf("the gateway has not been told it is revoked")
		}
		return nil
	})
	if out, err := connected(replicas[1]); err != nil || strings.Contains(out, "gateway~edge~") {
		t.Errorf("replica 1 after the gateway reconnected: %v\n%s", err, out)
	}
}
