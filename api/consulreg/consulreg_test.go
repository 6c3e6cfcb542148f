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
