package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

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
// second and records when calls succeeded and failed (the revoked callers
// of TestChaosJoinTokenRevocation).
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

// TestRevocationAcrossReplicas: two control planes share one Consul; a
// gateway connected to the second is revoked through the first, which
// closes no connection of its own: the second sees the revocation in
// Consul, closes the gateway's connection (its xDS stream) and refuses the
// stream when the gateway reconnects.
func TestRevocationAcrossReplicas(t *testing.T) {
	t.Parallel()
	consul := startConsul(t)
	c := newCluster(t)
	replicas, _ := startReplicas(t, c, consul, 2)
	connected := func(r *cpReplica) (string, error) { return r.cli("proxies") }

	// Its join token minted by replica 0 (c's CLI).
	gw := start(t, "gateway edge", "gateway", "--name", "edge", "--xds", replicas[1].xds,
		"--admin", c.addr("gateway-admin-edge"), "--token", c.token("edge"), "--log-level", "debug")
	eventually(t, 15*time.Second, "the gateway connected to replica 1", func() error {
		out, err := connected(replicas[1])
		if err == nil && !strings.Contains(out, "gateway~edge~") {
			err = fmt.Errorf("not listed:\n%s", out)
		}
		return err
	})

	out, err := replicas[0].cli("proxies", "revoke", "--service", "edge")
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
