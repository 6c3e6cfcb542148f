package httpproxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/tracing"
	"github.com/meshgate/meshgate/dataplane/upstream"
)

// DefaultTunnelIdleTimeout ends a WebSocket whose two connections carried
// nothing, either way, for this long, when its route has no idle_timeout:
// Envoy's default stream_idle_timeout.
const DefaultTunnelIdleTimeout = 5 * time.Minute

// WebSocket upgrades (HttpConnectionManager and RouteAction
// upgrade_configs, docs/xds.md "Upgrades"). An HTTP/1.1 request with
// "Connection: upgrade" and "Upgrade: websocket", without a body, on a
// route where upgrades are enabled, goes through the pipeline as any
// request (route, filters: RBAC may deny it) and is forwarded with its
// Upgrade header on an upstream connection of its own (Cluster.Upgrade).
// A response other than 101 is answered as any response. On 101 the
// response head is written, the downstream connection is taken over
// (hijacked) and the two connections are spliced both ways (tunnel) until
// both sides have closed, or either fails, or nothing passed for the idle
// timeout. Where upgrades are not enabled, or the upstream speaks HTTP/2,
// the Upgrade header is removed, as every hop-by-hop header is.

// webSocketUpgrade reports whether r asks for a WebSocket upgrade that a
// tunnel can carry: HTTP/1.1, no body, a Connection header with the
// "upgrade" token and an Upgrade header whose first protocol is websocket.
func webSocketUpgrade(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.ProtoMinor < 1 || r.ContentLength != 0 || len(r.TransferEncoding) > 0 {
		return false
	}
	up := r.Header["Upgrade"]
	if len(up) == 0 {
		return false
	}
	first, _, _ := strings.Cut(up[0], ",")
	first, _, _ = strings.Cut(first, "/") // a protocol version is allowed
	if !strings.EqualFold(textprotoTrim(first), "websocket") {
		return false
	}
	return headerHasToken(r.Header["Connection"], "upgrade")
}

// headerHasToken reports whether the comma-separated values hold token,
// case-insensitively.
func headerHasToken(values []string, token string) bool {
	for _, v := range values {
		for v != "" {
			var t string
			t, v, _ = strings.Cut(v, ",")
			if strings.EqualFold(textprotoTrim(t), token) {
				return true
			}
		}
	}
	return false
}

// upgrade forwards the upgrade request out (built by forward, with its
// Connection and Upgrade headers) to endpoint and, on 101, splices the
// connections.
func (h *Handler) upgrade(w http.ResponseWriter, r *http.Request, cfg *Config, rt *router.Route, cluster *upstream.Cluster, endpoint string, out *http.Request, attempt *tracing.Client, entry *accesslog.Entry) {
	resp, up, err := cluster.Upgrade(out, rt.Timeout())
	entry.SetUpstream(cluster.Name(), endpoint)
	if err != nil {
		attempt.Fail(err)
		h.upstreamError(w, r, rt, cluster, endpoint, err, nil, entry)
		return
	}
	attempt.SetStatus(resp.StatusCode)
	entry.UpstreamResponded()
	if up == nil { // refused: an ordinary response
		defer resp.Body.Close()
		h.respond(w, r, rt, cluster, resp, entry)
		return
	}
	defer up.Close()

	protocols := resp.Header["Upgrade"]
	removeHopByHop(resp.Header, false)
	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	if rt.HasClusterHeaders() {
		rt.ApplyClusterResponseHeaders(cluster.Name(), dst)
	}
	rt.ApplyResponseHeaders(dst)
	dst["Connection"] = []string{"Upgrade"}
	if len(protocols) > 0 {
		dst["Upgrade"] = protocols
	}
	// net/http writes a 101 head and hands the connection over; the
	// writers around it (metrics, access log, span) record the 101.
	w.WriteHeader(http.StatusSwitchingProtocols)
	down, brw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		h.logger.Debug("upgrade: the downstream connection cannot be taken over", "error", err)
		entry.Fail(accesslog.DownstreamProtocolError, detailsUpgradeFailed)
		panic(http.ErrAbortHandler)
	}
	defer down.Close()
	if u, ok := down.(interface{ Upgraded() }); ok {
		u.Upgraded() // the HTTP/1.1 framing guard stops reading it as requests
	}
	if err := brw.Flush(); err != nil {
		entry.Fail(accesslog.DownstreamConnectionTermination, accesslog.DetailsDownstreamGone)
		return
	}
	if err := down.SetDeadline(time.Time{}); err != nil {
		return
	}
	var downstream io.Reader = down
	if n := brw.Reader.Buffered(); n > 0 {
		// What the client sent after the request head, already read.
		buffered, _ := brw.Reader.Peek(n)
		downstream = io.MultiReader(bytes.NewReader(buffered), down)
	}
	idle := rt.IdleTimeout()
	if idle <= 0 {
		idle = DefaultTunnelIdleTimeout
	}
	t := &tunnel{idle: idle}
	sent, received := t.splice(h, &tunnelEnd{conn: down, r: downstream}, &tunnelEnd{conn: up, r: up})
	if rec := recorderOf(w); rec != nil {
		rec.written += sent
		rec.body = &requestBody{}
		rec.body.n.Store(received)
	}
	entry.AddTunnelBytes(sent, received)
	if t.timedOut.Load() {
		entry.Fail(accesslog.UpstreamRequestTimeout, detailsStreamIdle)
	}
}

// detailsUpgradeFailed: the downstream connection could not be taken over.
const detailsUpgradeFailed = "upgrade_failed"

// respond answers with resp, an upstream response to a request that was
// not upgraded: headers, then the body streamed.
func (h *Handler) respond(w http.ResponseWriter, r *http.Request, rt *router.Route, cluster *upstream.Cluster, resp *http.Response, entry *accesslog.Entry) {
	removeHopByHop(resp.Header, false)
	dst := w.Header()
	for k, vv := range resp.Header {
		dst[k] = vv
	}
	if rt.HasClusterHeaders() {
		rt.ApplyClusterResponseHeaders(cluster.Name(), dst)
	}
	rt.ApplyResponseHeaders(dst)
	w.WriteHeader(resp.StatusCode)
	if !h.copyBody(r.Context(), w, resp, entry) {
		return
	}
	for k, vv := range resp.Trailer {
		dst[http.TrailerPrefix+k] = vv
	}
}

// tunnelEnd is one side of a tunnel: the connection, and what to read from
// it (the connection, after bytes already buffered).
type tunnelEnd struct {
	conn net.Conn
	r    io.Reader
}

// tunnel splices two connections both ways with bounded buffers (the
// handler's pooled copy buffers, one per direction). A direction that
// reaches the end of its source half-closes its destination (CloseWrite,
// when it has one); the tunnel ends when both directions have, when either
// fails, or when nothing passed either way for idle.
type tunnel struct {
	idle time.Duration
	// last is when bytes last passed, either way (unix nanoseconds).
	last     atomic.Int64
	timedOut atomic.Bool
}

// splice copies a→b and b→a until the tunnel ends, then closes both. It
// returns the bytes copied b→a (sent to a) and a→b (received from a).
func (t *tunnel) splice(h *Handler, a, b *tunnelEnd) (toA, fromA int64) {
	if _, ok := h.tunnels.add(t, a, b); !ok {
		// The handler's drain is over: no new WebSocket.
		t.abort(a, b)
		return 0, 0
	}
	defer h.tunnels.remove(t)
	t.last.Store(time.Now().UnixNano())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		fromA = t.copy(h, b, a)
	}()
	toA = t.copy(h, a, b)
	wg.Wait()
	return toA, fromA
}

// copy copies src to dst until src ends (then half-closes dst) or either
// fails (then closes both, which ends the other direction too).
func (t *tunnel) copy(h *Handler, dst, src *tunnelEnd) int64 {
	bufp := h.buffers.Get().(*[]byte)
	defer h.buffers.Put(bufp)
	buf := *bufp
	var total int64
	for {
		if err := src.conn.SetReadDeadline(time.Now().Add(t.idle)); err != nil {
			t.abort(dst, src)
			return total
		}
		n, err := src.r.Read(buf)
		if n > 0 {
			t.last.Store(time.Now().UnixNano())
			if _, werr := dst.conn.Write(buf[:n]); werr != nil {
				t.abort(dst, src)
				return total + int64(n)
			}
			total += int64(n)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			if cw, ok := dst.conn.(interface{ CloseWrite() error }); ok {
				if cw.CloseWrite() == nil {
					return total
				}
			}
			t.abort(dst, src)
			return total
		case isTimeout(err) && time.Since(time.Unix(0, t.last.Load())) < t.idle:
			// Quiet this way only: the other way is busy.
		default:
			if isTimeout(err) {
				t.timedOut.Store(true)
			}
			t.abort(dst, src)
			return total
		}
	}
}

// abort ends the tunnel: both connections are closed.
func (t *tunnel) abort(a, b *tunnelEnd) {
	_ = a.conn.Close()
	_ = b.conn.Close()
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
