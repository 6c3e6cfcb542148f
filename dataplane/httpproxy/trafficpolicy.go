package httpproxy

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// cookieBytes is the size of a hash cookie's random value.
const cookieBytes = 16

// pickFirst picks the endpoint of a request's first try: by the route's
// hash policy on a consistent-hash cluster (ring hash, Maglev), else by
// the cluster's balancer. When the policy hashes a cookie the request does
// not have, it makes one and returns w wrapped to set it on the response.
func pickFirst(w http.ResponseWriter, r *http.Request, rt *router.Route, cluster *upstream.Cluster) (http.ResponseWriter, string, bool) {
	hp := rt.HashPolicy()
	if hp == nil || !cluster.HashesRequests() {
		e, ok := cluster.Next()
		return w, e, ok
	}
	key, hashed := "", false
	switch {
	case hp.Header != "":
		if v := r.Header[hp.Header]; len(v) > 0 && v[0] != "" {
			key, hashed = v[0], true
		}
	case hp.Cookie != "":
		if c, err := r.Cookie(hp.Cookie); err == nil && c.Value != "" {
			key, hashed = c.Value, true
		} else if hp.CookieTTL > 0 {
			var b [cookieBytes]byte
			_, _ = rand.Read(b[:])
			key, hashed = hex.EncodeToString(b[:]), true
			cookie := &http.Cookie{Name: hp.Cookie, Value: key, Path: hp.CookiePath, MaxAge: int(hp.CookieTTL / time.Second), HttpOnly: true}
			w = &cookieWriter{ResponseWriter: w, cookie: cookie.String()}
		}
	case hp.SourceIP:
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			key, hashed = host, true
		}
	}
	if !hashed {
		e, ok := cluster.Next()
		return w, e, ok
	}
	e, ok := cluster.NextFor(upstream.HashKey(key))
	return w, e, ok
}

// cookieWriter sets a hash cookie on the response the proxy sends, local
// replies included.
type cookieWriter struct {
	http.ResponseWriter
	cookie string
	wrote  bool
}

func (c *cookieWriter) WriteHeader(status int) {
	if !c.wrote {
		c.wrote = true
		c.Header()["Set-Cookie"] = append(c.Header()["Set-Cookie"], c.cookie)
	}
	c.ResponseWriter.WriteHeader(status)
}

func (c *cookieWriter) Write(p []byte) (int, error) {
	if !c.wrote {
		c.WriteHeader(http.StatusOK)
	}
	return c.ResponseWriter.Write(p)
}

func (c *cookieWriter) Flush() {
	if f, ok := c.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap is the wrapped writer (recorderOf, http.ResponseController).
func (c *cookieWriter) Unwrap() http.ResponseWriter { return c.ResponseWriter }

// errStreamIdle ends a request whose stream was idle for the route's
// idle_timeout.
var errStreamIdle = errors.New("stream idle timeout")

// idleTimer ends a request's upstream exchange once no byte of the request
// or response body moved for the route's idle_timeout.
type idleTimer struct {
	mu     sync.Mutex
	timer  *time.Timer
	idle   time.Duration
	cancel context.CancelCauseFunc
}

// withIdleTimeout returns out with a context that ends idle after the last
// activity (touch), and the timer; stop releases it.
func withIdleTimeout(out *http.Request, idle time.Duration) (*http.Request, *idleTimer) {
	ctx, cancel := context.WithCancelCause(out.Context())
	t := &idleTimer{idle: idle, cancel: cancel}
	t.timer = time.AfterFunc(idle, func() { cancel(errStreamIdle) })
	return out.WithContext(ctx), t
}

// touch records activity: the idle period starts again.
func (t *idleTimer) touch() {
	t.mu.Lock()
	t.timer.Reset(t.idle)
	t.mu.Unlock()
}

func (t *idleTimer) stop() {
	t.timer.Stop()
	t.cancel(nil)
}

// fired reports whether the stream was ended for being idle.
func (t *idleTimer) fired(ctx context.Context) bool {
	return context.Cause(ctx) == errStreamIdle //nolint:errorlint // the cause is the sentinel itself
}

// idleBody is a body whose reads are stream activity.
type idleBody struct {
	io.ReadCloser
	t *idleTimer
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.t.touch()
	}
	return n, err
}

// detailsStreamIdle is the access log's response code details of a
// request ended by its idle timeout (Envoy's).
const detailsStreamIdle = "stream_idle_timeout"

// bodyStreamIdle is the reply to a request ended by its idle timeout.
const bodyStreamIdle = "stream timeout\n"
