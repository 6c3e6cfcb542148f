package translate

import (
	"encoding/json"
	"fmt"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// MarshalJSON renders the resources as deterministic JSON (protojson per
// resource, re-encoded so whitespace is stable), for config dumps and goldens.
func (r *Resources) MarshalJSON() ([]byte, error) {
	listeners, err := rawMessages(r.Listeners)
	if err != nil {
		return nil, err
	}
	routes, err := rawMessages(r.Routes)
	if err != nil {
		return nil, err
	}
	clusters, err := rawMessages(r.Clusters)
	if err != nil {
		return nil, err
	}
	endpoints, err := rawMessages(r.Endpoints)
	if err != nil {
		return nil, err
	}
	// Private keys are never shown.
	redacted := make([]*tlsv3.Secret, len(r.Secrets))
	for i, s := range r.Secrets {
		redacted[i] = redactSecret(s)
	}
	secrets, err := rawMessages(redacted)
	if err != nil {
		return nil, err
	}
	return json.Marshal(struct {
		Listeners []json.RawMessage `json:"listeners"`
		Routes    []json.RawMessage `json:"routes"`
		Clusters  []json.RawMessage `json:"clusters"`
		Endpoints []json.RawMessage `json:"endpoints"`
		// Secrets is left out when empty, so meshes without a CA dump as before.
		Secrets []json.RawMessage `json:"secrets,omitempty"`
	}{listeners, routes, clusters, endpoints, secrets})
}

func rawMessages[M proto.Message](msgs []M) ([]json.RawMessage, error) {
	out := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		b, err := protojson.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("marshal %T: %w", m, err)
		}
		out = append(out, b)
	}
	return out, nil
}
