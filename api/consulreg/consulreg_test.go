package consulreg

import (
	"reflect"
	"testing"
	"time"

	"github.com/hashicorp/consul/api"
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
	if app.HTTP != "http://127.0.0.1:15101/app_health" || app.Interval != "200ms" || app.Timeout != "200ms" ||
		app.Status != api.HealthCritical || app.DeregisterCriticalServiceAfter != "" || app.CheckID != "service:"+sc.ID+":app" {
		t.Errorf("app health check %+v", app)
	}
	if sc.Check.HTTP != "http://127.0.0.1:15101/ready" || sc.Check.DeregisterCriticalServiceAfter != "1m0s" || sc.Check.CheckID != "service:"+sc.ID {
		t.Errorf("ready check %+v", sc.Check)
	}
}
