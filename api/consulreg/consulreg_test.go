package consulreg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/hashicorp/consul/api"

	"github.com/meshgate/meshgate/controlplane/state/consultest"
	"github.com/meshgate/meshgate/internal/testutil"
)

func TestSidecarRegistrations(t *testing.T) {
	t.Parallel()
	regs, err := SidecarRegistration{
		Service: "orders", Namespace: "shop", InboundAddress: "127.0.0.1:15006", AppAddress: "127.0.0.1:8080",
		AdminAddress: "127.0.0.1:15101", Labels: map[string]string{"version": "v1"}, RegisterApp: true,
		CheckInterval: 200 * time.Millisecond,
	}.Registrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(regs) != 2 {
		t.Fatalf("want sidecar and app registrations, got %d", len(regs))
	}
	sc, app := regs[0], regs[1]
	if sc.Port != 15006 || sc.Meta[MetaSidecar] != "true" || sc.Meta[MetaNamespace] != "shop" || sc.Check.HTTP != "http://127.0.0.1:15101/ready" ||
		sc.Check.Status != api.HealthCritical || sc.Check.DeregisterCriticalServiceAfter != "1m0s" || !reflect.DeepEqual(sc.Tags, []string{"version=v1"}) {
		t.Errorf("sidecar registration %+v check %+v", sc, sc.Check)
	}
	if app.Port != 8080 || app.Meta[MetaApp] != "true" || app.Meta[MetaSidecarID] != sc.ID || app.Check.AliasService != sc.ID {
		t.Errorf("app registration %+v check %+v", app, app.Check)
	}
	if _, err := (SidecarRegistration{Service: "x", InboundAddress: "nope"}).Registrations(); err == nil {
		t.Error("a bad inbound address was accepted")
	}
}

// TestRegisterDeregistersTheAppFirst: on stop, the application registered
// beside a sidecar is removed before the sidecar, so that discovery never
// sees the application without its sidecar (it would become an endpoint of
// its own, reached without mTLS). Against a real agent.
func TestRegisterDeregistersTheAppFirst(t *testing.T) {
	t.Parallel()
	agent := consultest.Start(t)
	regs, err := SidecarRegistration{
		Service: "orders", InboundAddress: "127.0.0.1:15006", AppAddress: "127.0.0.1:8080",
		AdminAddress: "127.0.0.1:15101", RegisterApp: true,
	}.Registrations()
	if err != nil {
		t.Fatal(err)
	}
	logs := &recordingHandler{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Register(ctx, RegisterOptions{Client: agent.Client, Services: regs, Logger: slog.New(logs), ResyncInterval: 50 * time.Millisecond})
	}()
	testutil.Eventually(t, 30*time.Second, "both registered", func() error {
		services, err := agent.Client.Agent().Services()
		if err == nil && len(services) != 2 {
			err = fmt.Errorf("%d services registered", len(services))
		}
		return err
	})
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	want := []string{regs[1].ID, regs[0].ID}
	if got := logs.deregistered(); !slices.Equal(got, want) {
		t.Errorf("deregistration order %v; want %v (the app, then its sidecar)", got, want)
	}
	if services, err := agent.Client.Agent().Services(); err != nil || len(services) != 0 {
		t.Errorf("left registered: %v %v", services, err)
	}
}

// recordingHandler keeps the ids of "deregistered from consul" records.
type recordingHandler struct {
	mu  sync.Mutex
	ids []string
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler            { return h }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message != "deregistered from consul" {
		return nil
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "id" {
			h.mu.Lock()
			h.ids = append(h.ids, a.Value.String())
			h.mu.Unlock()
		}
		return true
	})
	return nil
}

func (h *recordingHandler) deregistered() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return slices.Clone(h.ids)
}

// TestSidecarAppHealthCheck: with AppHealth the sidecar registration has a
// second check, of the admin /app_health, that starts critical and never
// deregisters the instance (a dead app takes it out of rotation only).
func TestSidecarAppHealthCheck(t *testing.T) {
	t.Parallel()
	reg := SidecarRegistration{Service: "orders", InboundAddress: "127.0.0.1:15006", AppAddress: "127.0.0.1:8080",
		AdminAddress: "127.0.0.1:15101", CheckInterval: 200 * time.Millisecond}
	regs, err := reg.Registrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(regs[0].Checks) != 0 {
		t.Errorf("without AppHealth: extra checks %+v", regs[0].Checks)
	}
	reg.AppHealth = true
	if regs, err = reg.Registrations(); err != nil {
		t.Fatal(err)
	}
	sc := regs[0]
	if len(sc.Checks) != 1 {
		t.Fatalf("with AppHealth: %d extra checks, want 1", len(sc.Checks))
	}
	app := sc.Checks[0]
	if app.HTTP != "http://127.0.0.1:15101/app_health" || app.Interval != "200ms" || app.Timeout != "2s" ||
		app.Status != api.HealthCritical || app.DeregisterCriticalServiceAfter != "" || app.CheckID != "service:"+sc.ID+":app" {
		t.Errorf("app health check %+v", app)
	}
	if sc.Check.HTTP != "http://127.0.0.1:15101/ready" || sc.Check.Timeout != "2s" || sc.Check.DeregisterCriticalServiceAfter != "1m0s" || sc.Check.CheckID != "service:"+sc.ID {
		t.Errorf("ready check %+v", sc.Check)
	}
}

// agentAfterOutage is a Consul agent's HTTP API, in memory, unreachable
// until up: then it lists no service and accepts registrations (recording
// when the first came) and anything else.
type agentAfterOutage struct {
	up time.Time

	mu         sync.Mutex
	attempts   int
	registered time.Time
}

func (a *agentAfterOutage) RoundTrip(r *http.Request) (*http.Response, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.attempts++
	if time.Now().Before(a.up) {
		return nil, errors.New("connect: connection refused")
	}
	body := ""
	switch r.URL.Path {
	case "/v1/agent/services":
		body = "{}"
	case "/v1/agent/service/register":
		if a.registered.IsZero() {
			a.registered = time.Now()
		}
	}
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
}

// TestRegisterSoonAfterAnOutage: while the agent is unreachable the
// registration is retried with a backoff capped at maxRetryBackoff (1s),
// not the resync interval: once an outage is over, the proxy is registered
// again within a second (virtual time: testing/synctest), even with the
// default resync interval of 5s. Ten outages of different lengths, so that
// the retries' jitter cannot hide a longer wait.
func TestRegisterSoonAfterAnOutage(t *testing.T) {
	t.Parallel()
	for i := range 10 {
		outage := time.Minute + time.Duration(i)*377*time.Millisecond
		synctest.Test(t, func(t *testing.T) {
			agent := &agentAfterOutage{up: time.Now().Add(outage)}
			client, err := api.NewClient(&api.Config{Address: "agent.invalid:8500", HttpClient: &http.Client{Transport: agent}})
			if err != nil {
				t.Fatal(err)
			}
			regs, err := SidecarRegistration{Service: "orders", InboundAddress: "127.0.0.1:15006", AdminAddress: "127.0.0.1:15101"}.Registrations()
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- Register(ctx, RegisterOptions{Client: client, Services: regs}) }()
			time.Sleep(outage + 10*time.Second)
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			agent.mu.Lock()
			defer agent.mu.Unlock()
			if agent.registered.IsZero() {
				t.Fatalf("outage of %s: never registered", outage)
			}
			if late := agent.registered.Sub(agent.up); late > maxRetryBackoff {
				t.Errorf("outage of %s: registered %s after the agent came back, want at most %s", outage, late, maxRetryBackoff)
			}
			// A minute of retries at most 1s apart: tens of requests, not thousands.
			if agent.attempts > 200 {
				t.Errorf("outage of %s: %d requests to the agent", outage, agent.attempts)
			}
		})
	}
}
