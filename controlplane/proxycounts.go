package controlplane

import "github.com/meshgate/meshgate/controlplane/xds"

// ProxyCounts sums up the connected proxies for GET /status.
type ProxyCounts struct {
	// Connected proxies, and by role ("gateway", "sidecar").
	Connected int            `json:"connected"`
	ByRole    map[string]int `json:"byRole"`
	// OnLatest are the proxies that accepted the latest configuration of
	// every type they ask for (xds.ProxyStatus.InSync) and are not held.
	OnLatest int `json:"onLatest"`
	// Held are the proxies whose configuration is held
	// (xds.ProxyStatus.Held).
	Held int `json:"held"`
	// Nacking are the proxies whose last answer to a type was a rejection.
	Nacking int `json:"nacking"`
}

// countProxies sums up proxies.
func countProxies(proxies []xds.ProxyStatus) ProxyCounts {
	c := ProxyCounts{ByRole: map[string]int{}}
	for _, p := range proxies {
		c.Connected++
		c.ByRole[p.Role]++
		switch {
		case p.Held != "":
			c.Held++
		case p.InSync:
			c.OnLatest++
		}
		if len(p.Nacked) > 0 {
			c.Nacking++
		}
	}
	return c
}
