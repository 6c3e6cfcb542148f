package conformance

// The status bridge: meshgate's status of every resource, read from the
// control plane's admin API (GET /resources: per resource its state and its
// Kubernetes-shaped status block), written back to the fake cluster's
// objects, where the suite reads it. It is copied as meshgate reports it:
// conditions with their observedGeneration (the generation the runner
// passes in each document's metadata), route parents with their defaulted
// parentRefs, a Gateway's status.addresses.

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// controllerName is the controller meshgate reports in route status.
const controllerName = "meshgate.dev/controller"

// resources is the control plane's GET /resources.
type resources struct {
	Version string           `json:"version"`
	Items   []resourceStatus `json:"items"`
}

// resourceStatus is one item of GET /resources (the fields the bridge uses).
type resourceStatus struct {
	Kind      string   `json:"kind"`
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	File      string   `json:"file"`
	State     string   `json:"state"`
	Problems  []string `json:"problems"`
	Object    struct {
		Status struct {
			Addresses  []gatewayv1.GatewayStatusAddress `json:"addresses"`
			Conditions []metav1.Condition               `json:"conditions"`
			Listeners  []gatewayv1.ListenerStatus       `json:"listeners"`
			Parents    []gatewayv1.RouteParentStatus    `json:"parents"`
			// AttachedListenerSets: on a Gateway.
			AttachedListenerSets *int32 `json:"attachedListenerSets"`
			// Ancestors: on a BackendTLSPolicy.
			Ancestors []gatewayv1.PolicyAncestorStatus `json:"ancestors"`
		} `json:"status"`
	} `json:"object"`
}

// fetchResources reads GET /resources with the admin token.
func (w *world) fetchResources(ctx context.Context) (*resources, error) {
	tok, err := os.ReadFile(filepath.Join(w.dataDir, "admin-token"))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+adminAddress+"/resources", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /resources: %s", resp.Status)
	}
	var r resources
	return &r, json.NewDecoder(resp.Body).Decode(&r)
}

// writeStatus copies meshgate's status of every GatewayClass, Gateway,
// HTTPRoute and GRPCRoute of the snapshot to the fake cluster. A resource
// the control plane does not report (yet: it has not loaded its file) keeps
// the status it has.
func writeStatus(ctx context.Context, c client.Client, o *objects, res *resources) error {
	byKey := map[objKey]*resourceStatus{}
	for i := range res.Items {
		it := &res.Items[i]
		byKey[objKey{kind: it.Kind, namespace: it.Namespace, name: it.Name}] = it
	}
	for i := range o.gatewayClasses {
		gc := &o.gatewayClasses[i]
		if s := byKey[keyOf("GatewayClass", gc)]; s != nil {
			gc.Status.Conditions = s.Object.Status.Conditions
			if err := updateStatus(ctx, c, gc); err != nil {
				return err
			}
		}
	}
	for i := range o.gateways {
		gw := &o.gateways[i]
		s := byKey[keyOf("Gateway", gw)]
		if s == nil {
			continue
		}
		st := s.Object.Status
		gw.Status = gatewayv1.GatewayStatus{Addresses: st.Addresses, Conditions: st.Conditions, Listeners: st.Listeners,
			AttachedListenerSets: st.AttachedListenerSets}
		if err := updateStatus(ctx, c, gw); err != nil {
			return err
		}
	}
	for i := range o.listenerSets {
		ls := &o.listenerSets[i]
		s := byKey[keyOf("ListenerSet", ls)]
		if s == nil {
			continue
		}
		ls.Status = gatewayv1.ListenerSetStatus{Conditions: s.Object.Status.Conditions}
		for _, l := range s.Object.Status.Listeners {
			ls.Status.Listeners = append(ls.Status.Listeners, gatewayv1.ListenerEntryStatus{Name: l.Name, SupportedKinds: l.SupportedKinds,
				AttachedRoutes: l.AttachedRoutes, Conditions: l.Conditions})
		}
		if err := updateStatus(ctx, c, ls); err != nil {
			return err
		}
	}
	for i := range o.httpRoutes {
		r := &o.httpRoutes[i]
		if s := byKey[keyOf("HTTPRoute", r)]; s != nil {
			r.Status.Parents = s.Object.Status.Parents
			if err := updateStatus(ctx, c, r); err != nil {
				return err
			}
		}
	}
	for i := range o.backendTLS {
		p := &o.backendTLS[i]
		if s := byKey[keyOf("BackendTLSPolicy", p)]; s != nil {
			p.Status.Ancestors = s.Object.Status.Ancestors
			if err := updateStatus(ctx, c, p); err != nil {
				return err
			}
		}
	}
	for i := range o.grpcRoutes {
		r := &o.grpcRoutes[i]
		if s := byKey[keyOf("GRPCRoute", r)]; s != nil {
			r.Status.Parents = s.Object.Status.Parents
			if err := updateStatus(ctx, c, r); err != nil {
				return err
			}
		}
	}
	for i := range o.tcpRoutes {
		r := &o.tcpRoutes[i]
		if s := byKey[keyOf("TCPRoute", r)]; s != nil {
			r.Status.Parents = s.Object.Status.Parents
			if err := updateStatus(ctx, c, r); err != nil {
				return err
			}
		}
	}
	for i := range o.tlsRoutes {
		r := &o.tlsRoutes[i]
		if s := byKey[keyOf("TLSRoute", r)]; s != nil {
			r.Status.Parents = s.Object.Status.Parents
			if err := updateStatus(ctx, c, r); err != nil {
				return err
			}
		}
	}
	return nil
}

func updateStatus(ctx context.Context, c client.Client, obj client.Object) error {
	err := c.Status().Update(ctx, obj)
	if apierrors.IsNotFound(err) || apierrors.IsConflict(err) {
		return nil // deleted or changed since the snapshot: the next refresh writes it
	}
	return err
}

func gatewaySpecAddress(ip string) gatewayv1.GatewaySpecAddress {
	return gatewayv1.GatewaySpecAddress{Type: ptr.To(gatewayv1.IPAddressType), Value: ip}
}
