// Package buffer is Envoy's buffer HTTP filter
// (envoy.extensions.filters.http.buffer.v3.Buffer, per route
// BufferPerRoute) for the meshgate proxy, in the subset of docs/xds.md
// ("Request body limits"): a request whose body is longer than
// max_request_bytes gets 413 Payload Too Large.
//
// Envoy buffers the whole body before forwarding it; the proxy streams it
// instead and counts the bytes as they pass, so that a limit costs no
// memory: a request whose Content-Length is over the limit gets 413 before
// anything is forwarded, and one without a length (chunked, HTTP/2) that
// runs over it has its upstream request aborted and gets 413 (unless the
// upstream answered first). The route's per-route config, the most
// specific one, wins over the filter's: disabled turns the limit off.
//
// The package holds the filter whole: Factory, subset.go and this runtime.
// A request of a route where the limit is off pays one lookup of its
// per-route config; a limited one a body wrapper.
package buffer

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// MaxRequestBytes bounds max_request_bytes (1 GiB), as the TrafficPolicy
// bodyLimits does.
const MaxRequestBytes = 1 << 30

// bodyTooLarge is the 413's body, Envoy's.
const bodyTooLarge = "Payload Too Large"

// Factory describes the buffer filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType:   configType,
		PerRouteType: perRouteType,
		Rules:        subsetRules(),
		New:          newFilter,
		NewPerRoute:  newPerRoute,
	}
}

// limit is a compiled Buffer or BufferPerRoute: the most bytes of a
// request body; 0 is no limit (disabled).
type limit struct{ maxBytes int64 }

// filter is one buffer http_filters entry.
type filter struct {
	name string // the entry's name: the key of its per-route configs
	own  limit
}

func compileLimit(b *bufferv3.Buffer) (limit, error) {
	n := b.GetMaxRequestBytes().GetValue()
	if n < 1 || n > MaxRequestBytes {
		return limit{}, fmt.Errorf("max_request_bytes: %d: want 1 to %d", n, MaxRequestBytes)
	}
	return limit{maxBytes: int64(n)}, nil
}

func newFilter(name string, config proto.Message, _ httpfilter.Env) (httpfilter.Filter, error) {
	cfg, ok := config.(*bufferv3.Buffer)
	if !ok {
		return nil, fmt.Errorf("want a Buffer, got %T", config)
	}
	own, err := compileLimit(cfg)
	if err != nil {
		return nil, err
	}
	return &filter{name: name, own: own}, nil
}

func newPerRoute(config proto.Message) (any, error) {
	cfg, ok := config.(*bufferv3.BufferPerRoute)
	if !ok {
		return nil, fmt.Errorf("want a BufferPerRoute, got %T", config)
	}
	switch {
	case cfg.GetDisabled():
		return &limit{}, nil
	case cfg.GetBuffer() != nil:
		l, err := compileLimit(cfg.GetBuffer())
		if err != nil {
			return nil, fmt.Errorf("buffer.%w", err)
		}
		return &l, nil
	}
	return nil, errors.New("one of disabled (true) and buffer is required")
}

// Wrap returns the handler limiting request bodies in front of next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// ServeHTTP answers 413 to a request whose Content-Length is over the
// limit of its route, and counts the bytes of the others' bodies.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	l := h.own
	if rt != nil {
		if own, ok := rt.PerFilterConfig(h.name).(*limit); ok {
			l = *own
		}
	}
	if l.maxBytes == 0 || r.Body == nil || r.Body == http.NoBody {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	if r.ContentLength > l.maxBytes {
		// The body is left unread: net/http closes the connection after
		// the reply rather than read it.
		w.Header()["Connection"] = []string{"close"}
		httpfilter.LocalReply(w, rt, http.StatusRequestEntityTooLarge, bodyTooLarge)
		return
	}
	r.Body = &limitedBody{ReadCloser: r.Body, left: l.maxBytes}
	h.next.ServeHTTP(w, r, rt)
}

// limitedBody fails with httpfilter.ErrRequestBodyTooLarge once more than
// its limit was read.
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left < 0 {
		return 0, httpfilter.ErrRequestBodyTooLarge
	}
	if int64(len(p)) > b.left+1 {
		p = p[:b.left+1]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	if b.left < 0 {
		return 0, httpfilter.ErrRequestBodyTooLarge
	}
	return n, err
}
