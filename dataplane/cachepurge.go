package dataplane

import (
	"encoding/json"
	"net/http"
	"strings"
)

// CachePurge is the answer of the admin API's POST /cache/purge: how many
// stored responses were removed from the response caches of the proxy's
// listeners.
type CachePurge struct {
	Prefix string `json:"prefix"`
	Purged int    `json:"purged"`
	// Caches is the number of response caches (listeners caching
	// responses) purged.
	Caches int `json:"caches"`
}

// purger is an HTTP filter holding stored responses (the response cache).
type purger interface{ Purge(prefix string) int }

// serveCachePurge removes the stored responses whose path starts with the
// query parameter prefix (absent: every one) from every listener's
// response cache. Loopback clients only, as it changes what is served.
func (p *Proxy) serveCachePurge(w http.ResponseWriter, r *http.Request) {
	if !fromLoopback(r.RemoteAddr) {
		http.Error(w, "cache purges are accepted from loopback clients only", http.StatusForbidden)
		return
	}
	prefix := r.URL.Query().Get("prefix")
	if prefix != "" && !strings.HasPrefix(prefix, "/") {
		http.Error(w, "prefix "+prefix+": want a path starting with /", http.StatusBadRequest)
		return
	}
	out := CachePurge{Prefix: prefix}
	p.mu.Lock()
	for _, spec := range p.state.listeners {
		for _, f := range spec.filters {
			if c, ok := f.(purger); ok {
				out.Purged += c.Purge(prefix)
				out.Caches++
			}
		}
	}
	p.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(out)
}
