package accesslog

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/trace"

	"github.com/meshgate/meshgate/api/logformat"
	"github.com/meshgate/meshgate/dataplane/peer"
)

// Flag is one of Envoy's response flags (%RESPONSE_FLAGS%), as a bit.
type Flag uint32

// The response flags the proxy sets, with Envoy's short names.
const (
	NoRouteFound                    Flag = 1 << iota // NR: no route matched (404)
	NoClusterFound                                   // NC: the route's cluster does not exist
	NoHealthyUpstream                                // UH: the cluster has no endpoint
	UpstreamConnectionFailure                        // UF: connecting to the endpoint failed
	UpstreamRequestTimeout                           // UT: the route timeout expired
	UpstreamConnectionTermination                    // UC: the upstream connection failed before a response
	UpstreamRemoteReset                              // UR: the upstream response was cut short
	DownstreamConnectionTermination                  // DC: the client went away
	DownstreamProtocolError                          // DPE: the request could not be read (its body)
	UpstreamOverflow                                 // UO: a circuit breaker limit of the cluster was reached (503)
	FaultInjected                                    // FI: the fault filter aborted the request
	DelayInjected                                    // DI: the fault filter delayed the request
)

// flagNames are the short names, in Envoy's order of Flag bits above.
var flagNames = [...]string{"NR", "NC", "UH", "UF", "UT", "UC", "UR", "DC", "DPE", "UO", "FI", "DI"}

// Response code details (%RESPONSE_CODE_DETAILS%), Envoy's values.
const (
	DetailsViaUpstream       = "via_upstream"
	DetailsRouteNotFound     = "route_not_found"
	DetailsClusterNotFound   = "cluster_not_found"
	DetailsNoHealthyUpstream = "no_healthy_upstream"
	DetailsConnectFailure    = "upstream_reset_before_response_started{connection_failure}"
	DetailsConnectTerminated = "upstream_reset_before_response_started{connection_termination}"
	DetailsResponseTimeout   = "response_timeout"
	DetailsUpstreamReset     = "upstream_reset_after_response_started{remote_reset}"
	DetailsDirectResponse    = "direct_response"
	DetailsDownstreamGone    = "downstream_remote_disconnect"
	DetailsPathNormalization = "path_normalization_failed"
	DetailsBadRequestBody    = "downstream_request_body_failed"
	DetailsOverflow          = "upstream_reset_before_response_started{overflow}"
	DetailsFaultAbort        = "fault_filter_abort"
)

// Entry is what is logged of one request: the writer that records the
// response, and what the pipeline recorded. Its methods are nil-safe: a
// nil *Entry (no access log) records nothing.
type Entry struct {
	w     http.ResponseWriter
	start time.Time
	req   *http.Request // the request as the pipeline serves it (its context)

	method, authority, path, proto, scheme string

	status      int
	wroteHeader bool
	bytesSent   int64
	// bytesReceived is counted by the transport's goroutine.
	bytesReceived atomic.Int64
	body          countedBody

	routeName                     string
	upstreamHost, upstreamCluster string
	flags                         Flag
	details                       string
	deniedBy                      string
	principal                     string
	// upstreamResponse: time from the start to the upstream's response
	// head; 0 without one.
	upstreamResponse time.Duration
}

// entryKey is the context key of the request's Entry.
type entryKey struct{}

// Start starts the Entry of r: it returns the writer to answer through and
// r with the Entry in its context (FromContext).
func Start(w http.ResponseWriter, r *http.Request) (*Entry, *http.Request) {
	e := &Entry{w: w, start: time.Now(), method: r.Method, authority: r.Host, path: r.RequestURI, proto: r.Proto}
	if !strings.HasPrefix(e.path, "/") && r.URL != nil {
		e.path = r.URL.RequestURI() // absolute-form, or no request line
	}
	if r.TLS != nil {
		e.scheme = "https"
	} else {
		e.scheme = "http"
	}
	if r.Body != nil && r.Body != http.NoBody {
		e.body = countedBody{ReadCloser: r.Body, n: &e.bytesReceived}
		r.Body = &e.body
	}
	r = r.WithContext(context.WithValue(r.Context(), entryKey{}, e))
	e.req = r
	return e, r
}

// FromContext returns the request's Entry, nil when it is not logged.
func FromContext(ctx context.Context) *Entry {
	e, _ := ctx.Value(entryKey{}).(*Entry)
	return e
}

// Denied records, on the request's Entry when it is logged, the RBAC
// policy that denied it: Envoy's RBAC filter's dynamic metadata
// envoy.filters.http.rbac enforced_effective_policy_id, and the response
// code details rbac_access_denied_matched_policy[<policy>].
func Denied(ctx context.Context, policy string) {
	if e := FromContext(ctx); e != nil {
		e.deniedBy = policy
		e.details = "rbac_access_denied_matched_policy[" + policy + "]"
	}
}

// Authenticated records the request's authenticated principal
// (%DYNAMIC_METADATA(meshgate.authn:principal)%).
func Authenticated(ctx context.Context, principal string) {
	if e := FromContext(ctx); e != nil {
		e.principal = principal
	}
}

// DeniedWith records the response code details of a request an
// authentication filter refused.
func DeniedWith(ctx context.Context, details string) {
	FromContext(ctx).SetDetails(details)
}

// SetRoute records the route that matched: its name, or, for a route
// without one, its virtual host's (as the server span's http.route).
func (e *Entry) SetRoute(name, virtualHost string) {
	if e == nil {
		return
	}
	if name == "" {
		name = virtualHost
	}
	e.routeName = name
}

// SetUpstream records the endpoint and cluster the request is sent to.
func (e *Entry) SetUpstream(cluster, endpoint string) {
	if e != nil {
		e.upstreamCluster, e.upstreamHost = cluster, endpoint
	}
}

// UpstreamResponded records that the upstream's response head arrived.
func (e *Entry) UpstreamResponded() {
	if e != nil {
		e.upstreamResponse = max(time.Since(e.start), time.Nanosecond)
		e.details = DetailsViaUpstream
	}
}

// Fail records a response flag and the response code details.
func (e *Entry) Fail(flag Flag, details string) {
	if e != nil {
		e.flags |= flag
		e.details = details
	}
}

// Flag records a response flag alone (a delay injected: the request goes on).
func (e *Entry) Flag(flag Flag) {
	if e != nil {
		e.flags |= flag
	}
}

// SetDetails records the response code details.
func (e *Entry) SetDetails(details string) {
	if e != nil {
		e.details = details
	}
}

// Header returns the wrapped writer's header map.
func (e *Entry) Header() http.Header { return e.w.Header() }

// WriteHeader records the final status and writes it.
func (e *Entry) WriteHeader(status int) {
	if !e.wroteHeader && (status >= 200 || status == http.StatusSwitchingProtocols) {
		e.wroteHeader = true
		e.status = status
	}
	e.w.WriteHeader(status)
}

// Write counts the body bytes sent.
func (e *Entry) Write(b []byte) (int, error) {
	if !e.wroteHeader {
		e.WriteHeader(http.StatusOK)
	}
	n, err := e.w.Write(b)
	e.bytesSent += int64(n)
	return n, err
}

// Flush sends what is buffered.
func (e *Entry) Flush() {
	if !e.wroteHeader {
		e.WriteHeader(http.StatusOK)
	}
	if f, ok := e.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (e *Entry) Unwrap() http.ResponseWriter { return e.w }

// AddTunnelBytes counts the bytes of an upgraded connection (a WebSocket):
// sent to the client, and received from it.
func (e *Entry) AddTunnelBytes(sent, received int64) {
	if e != nil {
		e.bytesSent += sent
		e.bytesReceived.Add(received)
	}
}

// countedBody counts the request body bytes read.
type countedBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// appendLine appends the JSON line of e, as s formats it, ending with a
// newline. end is when the request ended.
func (s *Settings) appendLine(buf []byte, e *Entry, end time.Time) []byte {
	buf = append(buf, '{')
	for i, f := range s.fields {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = append(buf, f.name...)
		buf = append(buf, ':')
		switch {
		case f.literal != "":
			buf = append(buf, f.literal...)
		case len(f.parts) == 1 && f.parts[0].Op != 0:
			// A whole value that is one operator keeps its type: a number,
			// or null when it has no value (Envoy's json_format).
			buf = e.appendValue(buf, f.parts[0], end, true)
		default:
			buf = append(buf, '"')
			for _, p := range f.parts {
				if p.Op == 0 {
					buf = appendJSONString(buf, p.Text)
					continue
				}
				buf = e.appendValue(buf, p, end, false)
			}
			buf = append(buf, '"')
		}
	}
	return append(buf, '}', '\n')
}

// appendValue appends one operator's value: as a JSON value when whole
// (a number, a quoted string, or null), else inside a string ("-" when it
// has none, as Envoy's text formats).
func (e *Entry) appendValue(buf []byte, p logformat.Part, end time.Time, whole bool) []byte {
	str := func(v string, ok bool) []byte {
		switch {
		case !ok && whole:
			return append(buf, "null"...)
		case !ok:
			return append(buf, '-')
		case whole:
			buf = append(buf, '"')
			buf = appendJSONString(buf, v)
			return append(buf, '"')
		}
		return appendJSONString(buf, v)
	}
	num := func(v int64, ok bool) []byte {
		switch {
		case !ok && whole:
			return append(buf, "null"...)
		case !ok:
			return append(buf, '-')
		}
		return strconv.AppendInt(buf, v, 10)
	}
	switch p.Op {
	case logformat.StartTime:
		if whole {
			buf = append(buf, '"')
		}
		buf = e.start.UTC().AppendFormat(buf, "2006-01-02T15:04:05.000Z")
		if whole {
			buf = append(buf, '"')
		}
		return buf
	case logformat.TraceID:
		sc := trace.SpanContextFromContext(e.req.Context())
		if !sc.TraceID().IsValid() {
			return str("", false)
		}
		return str(sc.TraceID().String(), true)
	case logformat.RouteName:
		return str(e.routeName, e.routeName != "")
	case logformat.UpstreamHost:
		return str(e.upstreamHost, e.upstreamHost != "")
	case logformat.UpstreamCluster:
		return str(e.upstreamCluster, e.upstreamCluster != "")
	case logformat.RequestHeader:
		v, ok := e.requestHeader(p.Header)
		if !ok && p.Alternative != "" {
			v, ok = e.requestHeader(p.Alternative)
		}
		return str(v, ok)
	case logformat.ResponseHeader:
		v, ok := headerValue(e.w.Header(), p.Header)
		if !ok && p.Alternative != "" {
			v, ok = headerValue(e.w.Header(), p.Alternative)
		}
		return str(v, ok)
	case logformat.Protocol:
		proto := e.proto
		if proto == "HTTP/2.0" {
			proto = "HTTP/2"
		}
		return str(proto, proto != "")
	case logformat.ResponseCode:
		return strconv.AppendInt(buf, int64(e.status), 10) // 0: no response sent (Envoy's)
	case logformat.ResponseFlags:
		return str(e.flagString(), true)
	case logformat.ResponseCodeDetails:
		return str(e.details, e.details != "")
	case logformat.DynamicMetadata:
		return str(e.deniedBy, e.deniedBy != "")
	case logformat.Principal:
		return str(e.principal, e.principal != "")
	case logformat.BytesReceived:
		return num(e.bytesReceived.Load(), true)
	case logformat.BytesSent:
		return num(e.bytesSent, true)
	case logformat.Duration:
		return num(end.Sub(e.start).Milliseconds(), true)
	case logformat.ResponseDuration:
		return num(e.upstreamResponse.Milliseconds(), e.upstreamResponse > 0)
	case logformat.DownstreamPeerURISAN:
		id := peer.Identity(e.req.Context())
		return str(id, id != "")
	case logformat.DownstreamRemoteAddress:
		return str(e.req.RemoteAddr, e.req.RemoteAddr != "")
	case logformat.DownstreamRemoteAddressWithoutPort:
		ip := e.req.RemoteAddr
		if host, _, err := net.SplitHostPort(ip); err == nil {
			ip = host
		}
		return str(ip, ip != "")
	}
	return str("", false)
}

// requestHeader is a request header as the request arrived for the
// pseudo-headers, as it was forwarded for the others.
func (e *Entry) requestHeader(name string) (string, bool) {
	switch name {
	case ":path":
		return e.path, e.path != ""
	case ":method":
		return e.method, e.method != "" // none for a connection (StartConn)
	case ":authority":
		return e.authority, e.authority != ""
	case ":scheme":
		return e.scheme, e.scheme != ""
	}
	return headerValue(e.req.Header, name)
}

func headerValue(h http.Header, canonical string) (string, bool) {
	if v := h[canonical]; len(v) > 0 {
		return v[0], true
	}
	return "", false
}

// flagString is %RESPONSE_FLAGS%: the short names, comma-separated, or
// "-" for none (Envoy's).
func (e *Entry) flagString() string {
	if e.flags == 0 {
		return "-"
	}
	var b strings.Builder
	for i, name := range flagNames {
		if e.flags&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(name)
		}
	}
	return b.String()
}

// appendJSONString appends s escaped for the inside of a JSON string;
// invalid UTF-8 becomes U+FFFD.
func appendJSONString(buf []byte, s string) []byte {
	const hex = "0123456789abcdef"
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			switch {
			case c == '"' || c == '\\':
				buf = append(buf, '\\', c)
			case c < 0x20 || c == 0x7f:
				buf = append(buf, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			default:
				buf = append(buf, c)
			}
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, `\ufffd`...)
		} else {
			buf = append(buf, s[i:i+size]...)
		}
		i += size
	}
	return buf
}

// StartConn starts the Entry of a proxied TCP connection from remoteAddr
// (tcp_proxy's access log): no request, its identity (peer.Identity) and
// trace from ctx; bytes are added with AddTunnelBytes.
func StartConn(ctx context.Context, remoteAddr string) *Entry {
	r := (&http.Request{RemoteAddr: remoteAddr, Header: http.Header{}}).WithContext(ctx)
	return &Entry{w: noResponse{}, start: time.Now(), req: r}
}

// noResponse is the writer of a connection's Entry: no headers.
type noResponse struct{}

func (noResponse) Header() http.Header         { return http.Header{} }
func (noResponse) Write(b []byte) (int, error) { return len(b), nil }
func (noResponse) WriteHeader(int)             {}

// Deny records, on a connection's Entry, the RBAC policy that denied it (as
// Denied does for a request).
func (e *Entry) Deny(policy string) {
	if e != nil {
		e.deniedBy = policy
		e.details = "rbac_access_denied_matched_policy[" + policy + "]"
	}
}
