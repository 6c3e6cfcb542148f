package dataplane

import (
	"encoding/json"
	"net/http"
	"slices"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/xdsclient"
)

// adminHandler serves /ready, /config_dump and /stats.
func (p *Proxy) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if !p.Ready() {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: no listener configuration applied yet\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /config_dump", func(w http.ResponseWriter, _ *http.Request) {
		body, err := p.configDump()
		if err != nil {
			http.Error(w, "config dump: "+err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, _ *http.Request) {
		p.mu.Lock()
		out := map[string]int64{
			"updates_accepted": p.stats.accepted.Load(),
			"updates_rejected": p.stats.rejected.Load(),
			"listeners":        int64(len(p.servers)),
			"clusters":         int64(len(p.clusters)),
		}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(out)
	})
	return mux
}

// ConfigDump is the JSON shape of GET /config_dump.
type ConfigDump struct {
	Node     json.RawMessage            `json:"node"`
	Versions map[string]string          `json:"versions"` // by type URL
	Accepted map[string]json.RawMessage `json:"resources"`
	Ready    bool                       `json:"ready"`
	Bound    map[string]string          `json:"listener_addresses"`
}

// configDump renders the accepted resources (protojson) and versions per type.
func (p *Proxy) configDump() ([]byte, error) {
	p.mu.Lock()
	resources := map[string][]proto.Message{}
	for _, name := range sortedKeys(p.state.clusters) {
		resources[xdsclient.ClusterType] = append(resources[xdsclient.ClusterType], p.state.clusters[name])
	}
	for _, name := range sortedKeys(p.state.endpoints) {
		resources[xdsclient.EndpointType] = append(resources[xdsclient.EndpointType], p.state.endpoints[name])
	}
	for _, name := range sortedKeys(p.state.listeners) {
		resources[xdsclient.ListenerType] = append(resources[xdsclient.ListenerType], p.state.listeners[name].config)
	}
	for _, name := range sortedKeys(p.state.routes) {
		resources[xdsclient.RouteType] = append(resources[xdsclient.RouteType], p.state.routes[name].config)
	}
	dump := ConfigDump{
		Versions: make(map[string]string, len(p.state.versions)),
		Accepted: make(map[string]json.RawMessage, len(resources)),
		Ready:    p.Ready(),
		Bound:    make(map[string]string, len(p.servers)),
	}
	for k, v := range p.state.versions {
		dump.Versions[k] = v
	}
	for _, s := range p.servers {
		dump.Bound[s.listener] = s.ln.Addr().String()
	}
	p.mu.Unlock()

	var err error
	if dump.Node, err = protojson.Marshal(p.opts.Node); err != nil {
		return nil, err
	}
	for typeURL, msgs := range resources {
		list := make([]json.RawMessage, 0, len(msgs))
		for _, m := range msgs {
			b, err := protojson.Marshal(m)
			if err != nil {
				return nil, err
			}
			list = append(list, b)
		}
		if dump.Accepted[typeURL], err = json.Marshal(list); err != nil {
			return nil, err
		}
	}
	return json.MarshalIndent(dump, "", "  ")
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
