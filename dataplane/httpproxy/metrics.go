package httpproxy

import (
	"net/http"
	"time"

	"github.com/meshgate/meshgate/dataplane/metrics"
)

// recorder is the downstream writer of a request whose listener has
// metrics: it records the final status and the body bytes written. Pooled
// (Handler.recorders), so that a request allocates none.
type recorder struct {
	w       http.ResponseWriter
	status  int // final status written; 0 before
	written int64
	route   *metrics.Route       // nil until a route is selected
	dest    *metrics.Destination // nil until a cluster is picked
	body    *requestBody         // the forwarded request body, when there is one
	start   time.Time
}

func (rec *recorder) Header() http.Header { return rec.w.Header() }

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 && (status >= 200 || status == http.StatusSwitchingProtocols) {
		rec.status = status
	}
	rec.w.WriteHeader(status)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	n, err := rec.w.Write(b)
	rec.written += int64(n)
	return n, err
}

// Flush flushes the wrapped writer when it can.
func (rec *recorder) Flush() {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if f, ok := rec.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.w }

// recorderOf finds the recorder under the writers that wrap it (tracing,
// filters); nil when the listener has no metrics. It does not allocate.
func recorderOf(w http.ResponseWriter) *recorder {
	for {
		switch x := w.(type) {
		case *recorder:
			return x
		case interface{ Unwrap() http.ResponseWriter }:
			w = x.Unwrap()
		default:
			return nil
		}
	}
}

// startMetrics wraps w in a pooled recorder.
func (h *Handler) startMetrics(w http.ResponseWriter) *recorder {
	rec := h.recorders.Get().(*recorder)
	rec.w, rec.start = w, time.Now()
	return rec
}

// selectRoute records the route a request matched (nil: none) and counts
// it in flight.
func (rec *recorder) selectRoute(route *metrics.Route) {
	rec.route = route
	route.Start()
}

// endMetrics records the request and returns rec to the pool;
// contentLength is the request's as received.
func (h *Handler) endMetrics(m *metrics.Listener, rec *recorder, contentLength int64) {
	route := rec.route
	if route == nil {
		route = m.Route(nil)
	} else {
		route.Done()
	}
	dest := rec.dest
	if dest == nil {
		dest = route.Destination("")
	}
	requestBytes := max(contentLength, 0)
	if rec.body != nil {
		requestBytes = rec.body.n.Load()
	}
	dest.Observe(rec.status, time.Since(rec.start), requestBytes, rec.written)
	*rec = recorder{}
	h.recorders.Put(rec)
}
