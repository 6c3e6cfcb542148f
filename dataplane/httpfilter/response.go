package httpfilter

import "net/http"

// ResponseHook changes a response head just before it is written.
type ResponseHook interface {
	// BeforeResponse is called once per response with its final status and
	// headers, which it may change.
	BeforeResponse(status int, h http.Header)
}

// ResponseWriter wraps the downstream http.ResponseWriter for a filter that
// changes the response head (response header mutations, CORS...): its hook
// runs once, just before the head is written, whoever writes it (the
// router, a local reply, a filter further down the chain), as Envoy's
// encoder filters see every response of the requests they saw. 1xx heads
// pass unchanged. Embed it in the filter's per-request state and Reset it,
// so that wrapping costs that one allocation.
type ResponseWriter struct {
	w     http.ResponseWriter
	hook  ResponseHook
	wrote bool
}

// Reset makes rw wrap w with hook.
func (rw *ResponseWriter) Reset(w http.ResponseWriter, hook ResponseHook) {
	*rw = ResponseWriter{w: w, hook: hook}
}

// Header returns the wrapped writer's header map.
func (rw *ResponseWriter) Header() http.Header { return rw.w.Header() }

// WriteHeader runs the hook, once, before a final status is written.
func (rw *ResponseWriter) WriteHeader(status int) {
	if !rw.wrote && (status >= 200 || status == http.StatusSwitchingProtocols) {
		rw.wrote = true
		rw.hook.BeforeResponse(status, rw.w.Header())
	}
	rw.w.WriteHeader(status)
}

// Write writes body bytes, the head (200) first if it was not written.
func (rw *ResponseWriter) Write(b []byte) (int, error) {
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	return rw.w.Write(b)
}

// Flush sends what is buffered, the head (200) first if it was not
// written; nothing when the wrapped writer cannot flush.
func (rw *ResponseWriter) Flush() {
	if !rw.wrote {
		rw.WriteHeader(http.StatusOK)
	}
	if f, ok := rw.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (rw *ResponseWriter) Unwrap() http.ResponseWriter { return rw.w }
