package controlplane

import (
	"fmt"
	"net/http"

	"github.com/meshgate/meshgate/policy"
)

// Resources is what GET /resources answers: the status of every resource
// of the policy last evaluated (policy.Result.Statuses), with the resource
// as Kubernetes shows it (spec and status).
type Resources struct {
	// Version is the policy version served.
	Version string                  `json:"version"`
	Items   []policy.ResourceStatus `json:"items"`
}

// handleResources serves GET /resources (?kind= filters by kind, in any
// form `meshgate get` accepts: "httproute", "svc"...) and GET
// /resources/{kind}/{namespace}/{name} (one resource; a name defined twice
// answers its first definition; the namespace of a cluster-scoped kind,
// such as GatewayClass, is ignored).
func (cp *ControlPlane) handleResources(w http.ResponseWriter, r *http.Request) {
	kind := r.PathValue("kind")
	if kind == "" {
		kind = r.URL.Query().Get("kind")
	}
	if kind != "" {
		k, ok := policy.LookupKind(kind)
		if !ok {
			writeError(w, http.StatusBadRequest, fmt.Errorf("unknown kind %q (want %s)", kind, policy.KindsText()))
			return
		}
		kind = k
	}
	cp.mu.Lock()
	result, version := cp.result, cp.version
	cp.mu.Unlock()
	out := Resources{Version: version, Items: []policy.ResourceStatus{}}
	if result != nil {
		for _, s := range result.Statuses {
			if kind == "" || s.Kind == kind {
				out.Items = append(out.Items, s)
			}
		}
	}
	name := r.PathValue("name")
	if name == "" {
		writeJSON(w, http.StatusOK, out)
		return
	}
	namespace := r.PathValue("namespace")
	if policy.ClusterScoped(kind) {
		namespace = "" // whatever the client gave
	}
	for _, s := range out.Items {
		if s.Namespace == namespace && s.Name == name {
			writeJSON(w, http.StatusOK, s)
			return
		}
	}
	writeError(w, http.StatusNotFound, fmt.Errorf("%s %s/%s not found in the policy", kind, namespace, name))
}
