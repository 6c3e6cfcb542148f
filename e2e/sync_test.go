package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// syncStatus is what GET /status says of the control plane's first sync and
// of what it holds back.
type syncStatus struct {
	Version          string   `json:"version"`
	LastError        string   `json:"lastError"`
	Serving          bool     `json:"serving"`
	WaitingFor       []string `json:"waitingFor"`
	HeldPolicyChange *struct {
		Reason string `json:"reason"`
	} `json:"heldPolicyChange"`
	Proxies []struct {
		ID   string `json:"id"`
		Held string `json:"held"`
	} `json:"proxies"`
}

func (c *cluster) syncStatus() (*syncStatus, error) {
	var s syncStatus
	return &s, adminGet(c.admin, c.adminToken(), "/status", &s)
}

// TestDestructivePolicyEditHeld: an editor truncating a policy file for a
// second before writing it again costs no request; a file left empty is
// applied once it has stayed so for the hold window (5 s by default), with a
// warning in the log.
func TestDestructivePolicyEditHeld(t *testing.T) {
	t.Parallel()
	c, url := startBlueGreen(t)
	routes := filepath.Join(c.dir, "routes.yaml")
	content, err := os.ReadFile(routes)
	if err != nil {
		t.Fatal(err)
	}
	load := startLoad(t, url, 2)
	eventually(t, 30*time.Second, "load running", func() error {
		if load.total.Load() < 50 {
			return fmt.Errorf("%d requests so far", load.total.Load())
		}
		return nil
	})

	// In place, as an editor that truncates before it writes.
	if err := os.WriteFile(routes, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second) // the editor's gap, not a synchronisation
	if err := os.WriteFile(routes, content, 0o644); err != nil {
		t.Fatal(err)
	}
	eventually(t, 10*time.Second, "the held truncation superseded by the restore", func() error {
		st, err := c.syncStatus()
		if err != nil {
			return err
		}
		if st.HeldPolicyChange != nil {
			return fmt.Errorf("still held: %s", st.HeldPolicyChange.Reason)
		}
		return nil
	})
	n := load.total.Load()
	eventually(t, 10*time.Second, "traffic after the restore", func() error {
		if load.total.Load() < n+100 {
			return fmt.Errorf("%d requests since", load.total.Load()-n)
		}
		return nil
	})
	load.stop()
	load.check(t)
	if out := c.cp.out.String(); !strings.Contains(out, "destructive policy change held") {
		t.Error("the truncation was not held (no warning in the log)")
	} else if strings.Contains(out, "applying a destructive policy change") {
		t.Error("the truncation was applied although the file was restored within the hold window")
	}

	if err := os.WriteFile(routes, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	c.expectEventually("the emptied file applied after the hold window", 20*time.Second, url, nil, func(r *response) error {
		if r.status != 404 {
			return fmt.Errorf("status %d", r.status)
		}
		return nil
	})
	if out := c.cp.out.String(); !strings.Contains(out, "applying a destructive policy change") || !strings.Contains(out, "routes.yaml holds no document any more") {
		t.Errorf("no warning naming the emptied file when it was applied")
	}
}
