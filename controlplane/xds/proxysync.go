package xds

import (
	"context"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/peer"
)

// Nack is a proxy's rejection of a configuration it was sent.
type Nack struct {
	// TypeURL is the rejected type (e.g. the Listener type URL).
	TypeURL string `json:"typeURL"`
	// Version is the version the proxy rejected (the one sent with the
	// response whose nonce the rejection carries); empty when unknown.
	Version string `json:"version,omitempty"`
	// Error is the proxy's error detail.
	Error string `json:"error"`
	// At is when the rejection arrived.
	At time.Time `json:"at"`
}

// sentResponse is the last response of one type sent to a proxy.
type sentResponse struct {
	nonce, version string
}

// proxySync is what the ADS stream says of a proxy's configuration: the
// types it asked for, the last response of each type it was sent, the
// nonce its last ACK of each type answered, and its last NACK.
type proxySync struct {
	// peer is the address its xDS connection comes from.
	peer      string
	requested map[string]bool
	sent      map[string]sentResponse
	ackNonce  map[string]string
	lastNack  *Nack
}

func newProxySync(peerAddr string) proxySync {
	return proxySync{peer: peerAddr, requested: map[string]bool{}, sent: map[string]sentResponse{}, ackNonce: map[string]string{}}
}

// request records a request of the type; an ACK records the nonce it
// answers, a NACK (detail not empty) becomes the last NACK, naming the
// version of the response it rejects.
func (p *proxySync) request(req *discoveryv3.DiscoveryRequest, now time.Time) {
	typeURL := req.GetTypeUrl()
	p.requested[typeURL] = true
	if req.GetResponseNonce() == "" {
		return
	}
	if detail := req.GetErrorDetail(); detail != nil {
		nack := &Nack{TypeURL: typeURL, Error: detail.GetMessage(), At: now.UTC()}
		if s := p.sent[typeURL]; s.nonce == req.GetResponseNonce() {
			nack.Version = s.version
		}
		p.lastNack = nack
		delete(p.ackNonce, typeURL)
		return
	}
	p.ackNonce[typeURL] = req.GetResponseNonce()
}

// inSync reports whether the proxy accepted the latest version of every
// type it asked for: the version of the type in snap, or, for a type whose
// resources are asked by name (routes, endpoints), the last response sent
// when it accepted that one (a change of resources it does not ask for is
// not sent to it).
func (p *proxySync) inSync(snap *nodeSnapshot, acked map[string]string) bool {
	if snap == nil || len(p.requested) == 0 {
		return false
	}
	for typeURL := range p.requested {
		ts := snap.types[typeURL]
		if ts == nil {
			continue // a type meshgate does not serve
		}
		got := acked[typeURL]
		if got == ts.version {
			continue
		}
		sent := p.sent[typeURL]
		byName := typeURL == resourcev3.RouteType || typeURL == resourcev3.EndpointType
		if byName && sent.nonce != "" && p.ackNonce[typeURL] == sent.nonce && got == sent.version {
			continue
		}
		return false
	}
	return true
}

// onStreamResponse records the version and nonce of a response about to be
// sent on a stream.
func (s *Server) onStreamResponse(_ context.Context, streamID int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.nodes[s.streams[streamID]]
	if n == nil || resp == nil {
		return
	}
	n.sync.sent[resp.GetTypeUrl()] = sentResponse{nonce: resp.GetNonce(), version: resp.GetVersionInfo()}
}

// syncStatusLocked sets the fields of st that say how far the proxy is in
// sync with what it is served.
func (n *node) syncStatusLocked(st *ProxyStatus) {
	st.Peer = n.sync.peer
	st.Address = n.info.InboundAddress
	if st.Address == "" {
		st.Address = n.sync.peer
	}
	if n.snap != nil {
		st.Served = make(map[string]string, len(n.snap.types))
		for typeURL, ts := range n.snap.types {
			if n.sync.requested[typeURL] {
				st.Served[typeURL] = ts.version
			}
		}
	}
	st.InSync = n.sync.inSync(n.snap, n.acked)
	if nack := n.sync.lastNack; nack != nil {
		copied := *nack
		st.LastNack = &copied
	}
}

// peerAddress is the address of the peer of a stream's context, "" when
// unknown.
func peerAddress(ctx context.Context) string {
	if ctx == nil {
		return ""
	}
	p, ok := peer.FromContext(ctx)
	if !ok || p.Addr == nil {
		return ""
	}
	return p.Addr.String()
}

// Connected is the number of connected proxies.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.nodes)
}
