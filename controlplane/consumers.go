package controlplane

import (
	"net/http"

	"github.com/meshgate/meshgate/policy"
)

// Consumers is what GET /consumers answers: the consumers the served
// policy's SecurityPolicies declare (policy.Set.Consumers), names only.
type Consumers struct {
	// Version is the policy version served.
	Version string            `json:"version"`
	Items   []policy.Consumer `json:"items"`
}

// handleConsumers serves GET /consumers, for `meshgate get consumers`.
func (cp *ControlPlane) handleConsumers(w http.ResponseWriter, _ *http.Request) {
	cp.mu.Lock()
	result, version := cp.result, cp.version
	cp.mu.Unlock()
	out := Consumers{Version: version, Items: []policy.Consumer{}}
	if result != nil && result.Set != nil {
		out.Items = append(out.Items, result.Set.Consumers()...)
	}
	writeJSON(w, http.StatusOK, out)
}
