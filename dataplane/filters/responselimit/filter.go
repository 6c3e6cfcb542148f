// Package responselimit is meshgate's response body limit HTTP filter for
// the meshgate proxy (docs/xds.md "Response body limits"): a response
// whose body is longer than max_response_bytes gets 502 Bad Gateway in
// its stead, or, when its length was not known before its head was sent,
// is aborted. Envoy has no such filter: its config is an
// xds.type.v3.TypedStruct of type_url TypeURL, listener-level in the
// http_filters entry and per route in an envoy.config.route.v3.
// FilterConfig, both optional (is_optional) so that an Envoy given the
// same xDS skips the filter instead of rejecting the listener.
//
// The response is streamed, never buffered: one whose Content-Length is
// over the limit gets 502 (a text body naming the limit, response code
// details response_payload_too_large) before any byte of it is sent, its
// upstream response closed unread; one without a length (chunked, HTTP/2)
// that runs over the limit is aborted when it does (the stream reset; for
// HTTP/1.1 the connection closed before the final chunk), so that the
// client sees a broken response, never a short complete one. The route's
// per-route config, the most specific one, wins over the filter's; a
// value without max_response_bytes is no limit.
//
// A request of a route without a limit pays one lookup of its per-route
// config; a limited one a response writer wrapper.
package responselimit

import (
	"fmt"
	"net/http"
	"strconv"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// DetailsTooLarge is the response code details of a response over its
// limit (Envoy's for a response over a buffer limit).
const DetailsTooLarge = "response_payload_too_large"

// Factory describes the response limit filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		TypeURL:     TypeURL,
		CheckValue:  checkValue,
		New:         newFilter,
		NewPerRoute: newPerRoute,
	}
}

// limit is a compiled value: the most bytes of a response body; 0 is no
// limit.
type limit struct{ maxBytes int64 }

func compileLimit(config proto.Message) (limit, error) {
	v, ok := config.(*structpb.Struct)
	if !ok {
		return limit{}, fmt.Errorf("want a Struct, got %T", config)
	}
	n, err := parseValue(v)
	if err != nil {
		return limit{}, fmt.Errorf("%s: %w", maxResponseBytesField, err)
	}
	return limit{maxBytes: n}, nil
}

// filter is one response limit http_filters entry.
type filter struct {
	name string // the entry's name: the key of its per-route configs
	own  limit
}

func newFilter(name string, config proto.Message, _ httpfilter.Env) (httpfilter.Filter, error) {
	own, err := compileLimit(config)
	if err != nil {
		return nil, err
	}
	return &filter{name: name, own: own}, nil
}

func newPerRoute(config proto.Message) (any, error) {
	l, err := compileLimit(config)
	if err != nil {
		return nil, err
	}
	return &l, nil
}

// Wrap returns the handler limiting response bodies of next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// ServeHTTP serves the request through a writer that counts the response
// body when its route has a limit.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	l := h.own
	if rt != nil {
		if own, ok := rt.PerFilterConfig(h.name).(*limit); ok {
			l = *own
		}
	}
	if l.maxBytes == 0 {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	h.next.ServeHTTP(&limitedWriter{w: w, r: r, rt: rt, max: l.maxBytes}, r, rt)
}

// States of a limitedWriter's response.
const (
	statePending   = iota // no final head written
	stateCounting         // a body is being counted
	stateUnlimited        // no body to count (HEAD, 204, 304, an upgrade)
	stateRefused          // the 502 was sent instead
)

// limitedWriter counts the response body against max.
type limitedWriter struct {
	w     http.ResponseWriter
	r     *http.Request
	rt    *router.Route
	max   int64
	sent  int64
	state uint8
}

// Header returns the wrapped writer's header map.
func (lw *limitedWriter) Header() http.Header { return lw.w.Header() }

// WriteHeader writes a final head, or the 502 instead when its
// Content-Length is over the limit.
func (lw *limitedWriter) WriteHeader(status int) {
	if lw.state != statePending || status < 200 && status != http.StatusSwitchingProtocols {
		lw.w.WriteHeader(status)
		return
	}
	if status == http.StatusSwitchingProtocols || status == http.StatusNoContent ||
		status == http.StatusNotModified || lw.r.Method == http.MethodHead {
		lw.state = stateUnlimited
		lw.w.WriteHeader(status)
		return
	}
	if cl := lw.w.Header()["Content-Length"]; len(cl) == 1 {
		if n, err := strconv.ParseInt(cl[0], 10, 64); err == nil && n > lw.max {
			lw.refuse()
			return
		}
	}
	lw.state = stateCounting
	lw.w.WriteHeader(status)
}

// refuse answers 502 in place of the response whose head was about to be
// written.
func (lw *limitedWriter) refuse() {
	lw.state = stateRefused
	header := lw.w.Header()
	for k := range header {
		delete(header, k)
	}
	accesslog.FromContext(lw.r.Context()).SetDetails(DetailsTooLarge)
	httpfilter.LocalReply(lw.w, lw.rt, http.StatusBadGateway,
		"response body over the route's limit of "+strconv.FormatInt(lw.max, 10)+" bytes")
}

// Write writes body bytes, the head (200) first if it was not written. It
// fails with httpfilter.ErrResponseBodyTooLarge when the 502 was sent
// instead of the response, and aborts the response (http.ErrAbortHandler)
// when the body runs over the limit.
func (lw *limitedWriter) Write(b []byte) (int, error) {
	if lw.state == statePending {
		lw.WriteHeader(http.StatusOK)
	}
	switch lw.state {
	case stateRefused:
		return 0, httpfilter.ErrResponseBodyTooLarge
	case stateCounting:
		if lw.sent += int64(len(b)); lw.sent > lw.max {
			accesslog.FromContext(lw.r.Context()).SetDetails(DetailsTooLarge)
			panic(http.ErrAbortHandler) // recovered by net/http, which resets the stream
		}
	}
	return lw.w.Write(b)
}

// Flush sends what is buffered, the head (200) first if it was not
// written; nothing when the wrapped writer cannot flush.
func (lw *limitedWriter) Flush() {
	if lw.state == statePending {
		lw.WriteHeader(http.StatusOK)
	}
	if lw.state == stateRefused {
		return
	}
	if f, ok := lw.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (lw *limitedWriter) Unwrap() http.ResponseWriter { return lw.w }
