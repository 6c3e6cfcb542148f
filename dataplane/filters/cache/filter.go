// Package cache is meshgate's response cache HTTP filter (docs/api-gateway.md
// "Response caching", docs/xds.md "Response caching"): GET responses of the
// routes that enable it are kept in an in-memory LRU with a byte budget per
// listener and served from there while fresh, per RFC 9111 as a shared
// cache: Cache-Control s-maxage and max-age, Expires, no-store, private
// and no-cache, Vary, revalidation with ETag (If-None-Match) and
// Last-Modified (If-Modified-Since), stale-while-revalidate; heuristic
// freshness is off (a response without explicit freshness is not stored,
// unless the route's TTL overrides it). Served responses carry Age and
// X-Cache: HIT, MISS or STALE.
//
// The key is the method, host, path, the route's chosen query parameters
// (all of them by default) and request headers, and, for an authenticated
// request (one with an Authorization header), the caller: responses are
// cached per principal unless the route is marked shared, when only the
// responses RFC 9111 lets a shared cache keep for such requests are
// stored, once for every caller. Concurrent misses of one key make one
// upstream request (coalescing); the others wait for it and are served
// its response when it could be stored.
//
// Envoy's cache filter has no per-route config, so the filter is
// meshgate's own: an xds.type.v3.TypedStruct of type_url TypeURL,
// optional (is_optional). A request of a route without caching pays one
// lookup of its per-route config.
package cache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
)

// X-Cache values.
const (
	Hit   = "HIT"
	Miss  = "MISS"
	Stale = "STALE"
)

// StatFamily is the /stats family of the cache's counters, by outcome:
// hit, miss, stale (served stale while refreshing), revalidated (a stale
// response confirmed by a 304), coalesced (a miss served the response of
// a concurrent one's upstream request), invalidated (by a write).
const StatFamily = "response_cache"

// refreshTimeout bounds a background revalidation.
const refreshTimeout = 30 * time.Second

// Factory describes the cache filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		TypeURL:     TypeURL,
		CheckValue:  checkValue,
		New:         newFilter,
		NewPerRoute: newPerRoute,
	}
}

// Filter is one cache http_filters entry: its store is shared by the
// listener's routes.
type Filter struct {
	name  string
	store *store
	stats *httpfilter.Counters // nil counts nothing
	// now is the clock (time.Now; tests set theirs).
	now func() time.Time
}

func newFilter(name string, config proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	v, ok := config.(*structpb.Struct)
	if !ok {
		return nil, errNotStruct
	}
	lc, err := compileListener(v)
	if err != nil {
		return nil, err
	}
	return &Filter{name: name, store: newStore(lc.maxCacheBytes), stats: env.Stats.Counters(StatFamily), now: time.Now}, nil
}

func newPerRoute(config proto.Message) (any, error) {
	v, ok := config.(*structpb.Struct)
	if !ok {
		return nil, errNotStruct
	}
	return compileRoute(v)
}

// Purge removes the stored responses whose path starts with prefix ("":
// all) and returns how many.
func (f *Filter) Purge(prefix string) int { return f.store.purge(prefix) }

// Stats returns the number of stored responses and the bytes they cost.
func (f *Filter) Stats() (entries int, bytes int64) { return f.store.stats() }

// Wrap returns the handler caching the responses of next.
func (f *Filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{Filter: f, next: next}
}

type handler struct {
	*Filter
	next httpfilter.Handler
}

// ServeHTTP serves a GET of a cached route from the store, or from next
// through a writer that stores what it may; HEAD, OPTIONS and TRACE pass
// through, and another method invalidates its target once answered.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	var rc *routeConfig
	if rt != nil {
		rc, _ = rt.PerFilterConfig(h.name).(*routeConfig)
	}
	if rc == nil || r.Method == http.MethodHead || r.Method == http.MethodOptions || r.Method == http.MethodTrace {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	if r.Method != http.MethodGet {
		// An unsafe method invalidates what is stored for its target
		// (RFC 9111 4.4), once it was answered: the caller's own key,
		// every variant.
		h.next.ServeHTTP(w, r, rt)
		get := *r
		get.Method = http.MethodGet
		h.store.invalidate(requestKey(&get, rc))
		h.stats.Inc("invalidated")
		return
	}
	noStore, noCache := requestDirectives(r.Header)
	if noStore {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	key := requestKey(r, rc)
	if !noCache {
		if e := h.store.get(key, r.Header); e != nil {
			now := h.now()
			age := e.age(now)
			switch {
			case age < e.lifetime:
				h.stats.Inc("hit")
				serve(w, r, e, now, Hit)
				return
			case age < e.lifetime+e.swr:
				h.stats.Inc("stale")
				serve(w, r, e, now, Stale)
				if h.store.startRefresh(key) {
					// The request is copied before the handler returns:
					// the refresh must not share it with what follows.
					ctx, cancel := context.WithTimeout(context.Background(), refreshTimeout)
					go h.refresh(cancel, r.Clone(ctx), rt, rc, key, e)
				}
				return
			}
			if h.revalidate(w, r, rt, rc, key, e) {
				return
			}
		}
	}
	h.fetch(w, r, rt, rc, key)
}

// fetch forwards a miss, coalesced with the concurrent misses of key: the
// leader's response is streamed to its client and stored when it may be;
// the others are served it, or fetch on their own when it could not be
// stored.
func (h *handler) fetch(w http.ResponseWriter, r *http.Request, rt *router.Route, rc *routeConfig, key string) {
	fl, leader := h.store.join(key)
	if !leader {
		select {
		case <-fl.done:
		case <-r.Context().Done():
			return
		}
		if e := fl.entry; e != nil && e.matches(r.Header) {
			h.stats.Inc("coalesced")
			serve(w, r, e, h.now(), Hit)
			return
		}
		h.stats.Inc("miss")
		cw := &captureWriter{limit: rc.maxBodyBytes, header: http.Header{}, passTo: func(int) http.ResponseWriter { return w }}
		h.next.ServeHTTP(cw, r, rt)
		h.keep(r, rc, key, cw)
		return
	}
	var stored *entry
	defer func() { h.store.land(key, fl, stored) }()
	h.stats.Inc("miss")
	cw := &captureWriter{limit: rc.maxBodyBytes, header: http.Header{}, passTo: func(int) http.ResponseWriter { return w }}
	h.next.ServeHTTP(cw, r, rt)
	stored = h.keep(r, rc, key, cw)
}

// revalidate sends the conditional request of a stale entry with a
// validator: a 304 refreshes the entry, served as a HIT; another answer
// is streamed to the client (MISS) and stored when it may be. It reports
// false, having written nothing, when the entry has no validator.
func (h *handler) revalidate(w http.ResponseWriter, r *http.Request, rt *router.Route, rc *routeConfig, key string, e *entry) bool {
	cond := conditional(r, e)
	if cond == nil {
		return false
	}
	cw := &captureWriter{limit: rc.maxBodyBytes, header: http.Header{}, passTo: func(status int) http.ResponseWriter {
		if status == http.StatusNotModified {
			return nil
		}
		return w
	}}
	h.next.ServeHTTP(cw, cond, rt)
	if cw.status == http.StatusNotModified {
		fresh := h.refreshed(e, cw.header, rc)
		h.store.put(fresh)
		h.stats.Inc("revalidated")
		serve(w, r, fresh, h.now(), Hit)
		return true
	}
	h.stats.Inc("miss")
	h.keep(r, rc, key, cw)
	return true
}

// refresh revalidates a stale entry in the background
// (stale-while-revalidate), on r: a copy of the client's request, detached
// from it (its context times out at refreshTimeout; cancel releases it).
func (h *handler) refresh(cancel context.CancelFunc, r *http.Request, rt *router.Route, rc *routeConfig, key string, e *entry) {
	defer h.store.endRefresh(key)
	defer cancel()
	req := r
	if cond := conditional(r, e); cond != nil {
		req = cond
	}
	cw := &captureWriter{limit: rc.maxBodyBytes, header: http.Header{}, passTo: func(int) http.ResponseWriter { return nil }}
	h.next.ServeHTTP(cw, req, rt)
	if cw.status == http.StatusNotModified {
		h.store.put(h.refreshed(e, cw.header, rc))
		return
	}
	h.keep(r, rc, key, cw)
}

// conditional returns a copy of r asking for e only if it changed, nil
// when e has no validator.
func conditional(r *http.Request, e *entry) *http.Request {
	etag, lastModified := e.header.Get("ETag"), e.header.Get("Last-Modified")
	if etag == "" && lastModified == "" {
		return nil
	}
	cond := r.Clone(r.Context())
	if etag != "" {
		cond.Header.Set("If-None-Match", etag)
	} else {
		cond.Header.Del("If-None-Match")
	}
	if lastModified != "" {
		cond.Header.Set("If-Modified-Since", lastModified)
	} else {
		cond.Header.Del("If-Modified-Since")
	}
	return cond
}

// refreshed is e updated by the headers of a 304 (RFC 9111 4.3.4).
func (h *handler) refreshed(e *entry, notModified http.Header, rc *routeConfig) *entry {
	now := h.now()
	header := e.header.Clone()
	for k, vs := range notModified {
		switch k {
		case "Content-Length", "Content-Encoding", "Transfer-Encoding", "X-Cache":
			continue
		}
		header[k] = slices.Clone(vs)
	}
	cc := parseCacheControl(header)
	fresh := *e
	fresh.header, fresh.elem = header, nil
	fresh.responseTime = now
	fresh.initialAge = initialAge(header, now)
	fresh.lifetime = lifetime(header, cc, rc.ttl, now)
	fresh.swr = staleFor(cc, rc)
	return &fresh
}

func staleFor(cc directives, rc *routeConfig) time.Duration {
	if cc.mustRevalidate || cc.proxyRevalidate {
		return 0
	}
	return max(rc.staleWhileRevalidate, time.Duration(max(cc.staleWhileRevalidate, 0))*time.Second)
}

// keep stores a captured response when RFC 9111 and the route allow it,
// returning the entry (nil when not stored).
func (h *handler) keep(r *http.Request, rc *routeConfig, key string, cw *captureWriter) *entry {
	if cw.status == 0 || cw.overflow || cw.failed {
		return nil
	}
	cc := parseCacheControl(cw.header)
	if !storable(cw.status, cw.header, cc, authenticated(r), rc.shared) {
		return nil
	}
	now := h.now()
	life := lifetime(cw.header, cc, rc.ttl, now)
	hasValidator := cw.header.Get("ETag") != "" || cw.header.Get("Last-Modified") != ""
	if life <= 0 && !hasValidator {
		return nil
	}
	vary := map[string]string{}
	for _, v := range cw.header.Values("Vary") {
		for name := range strings.SplitSeq(v, ",") {
			name = http.CanonicalHeaderKey(strings.TrimSpace(name))
			if name == "" {
				continue
			}
			if rc.allowedVary != nil && !rc.allowedVary[name] {
				return nil
			}
			vary[name] = strings.Join(r.Header[name], ",")
		}
	}
	header := cw.header.Clone()
	delete(header, "X-Cache")
	delete(header, "Age")
	e := &entry{
		key: key, path: r.URL.Path, status: cw.status, header: header, body: cw.body.Bytes(), vary: vary,
		responseTime: now, initialAge: initialAge(cw.header, now), lifetime: life, swr: staleFor(cc, rc),
	}
	h.store.put(e)
	return e
}

// serve writes a stored response: Age and X-Cache added; a 304 when the
// request's If-None-Match matches its ETag.
func serve(w http.ResponseWriter, r *http.Request, e *entry, now time.Time, state string) {
	header := w.Header()
	for k, vs := range e.header {
		header[k] = slices.Clone(vs)
	}
	header["Age"] = []string{strconv.FormatInt(int64(e.age(now)/time.Second), 10)}
	header["X-Cache"] = []string{state}
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatches(inm, e.header.Get("ETag")) {
		delete(header, "Content-Length")
		w.WriteHeader(http.StatusNotModified)
		return
	}
	header["Content-Length"] = []string{strconv.Itoa(len(e.body))}
	w.WriteHeader(e.status)
	if r.Method != http.MethodHead && len(e.body) > 0 {
		_, _ = w.Write(e.body)
	}
}

// authenticated reports whether a request has a caller: an Authorization
// header, or a principal (httpfilter.Principal: what an authentication
// filter established, else the mTLS peer's SPIFFE ID).
func authenticated(r *http.Request) bool {
	return len(r.Header["Authorization"]) > 0 || httpfilter.Principal(r.Context()) != ""
}

// requestKey is the cache key of a request: method, host (lowercase, no
// port), path, the route's query parameters and headers, and, unless the
// route is shared, the caller: its principal (httpfilter.Principal) and a
// hash of its Authorization header.
func requestKey(r *http.Request, rc *routeConfig) string {
	var b strings.Builder
	host := strings.ToLower(r.Host)
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.Contains(host[i:], "]") {
		host = host[:i]
	}
	b.WriteString(r.Method)
	b.WriteByte(' ')
	b.WriteString(host)
	b.WriteString(r.URL.EscapedPath())
	if r.URL.RawQuery != "" {
		query := r.URL.Query()
		params := rc.queryParameters
		if params == nil {
			params = make([]string, 0, len(query))
			for k := range query {
				params = append(params, k)
			}
			slices.Sort(params)
		}
		for _, p := range params {
			for _, v := range query[p] {
				b.WriteString("\x00q")
				b.WriteString(url.QueryEscape(p))
				b.WriteByte('=')
				b.WriteString(url.QueryEscape(v))
			}
		}
	}
	for _, name := range rc.headers {
		b.WriteString("\x00h")
		b.WriteString(name)
		b.WriteByte('=')
		b.WriteString(strings.Join(r.Header[name], ","))
	}
	if rc.shared {
		return b.String()
	}
	if principal := httpfilter.Principal(r.Context()); principal != "" {
		b.WriteString("\x00u")
		b.WriteString(principal)
	}
	if auth := r.Header["Authorization"]; len(auth) > 0 {
		sum := sha256.Sum256([]byte(strings.Join(auth, "\n")))
		b.WriteString("\x00p")
		b.WriteString(hex.EncodeToString(sum[:]))
	}
	return b.String()
}

// captureWriter records the response next writes (head and, up to limit,
// body), streaming it meanwhile to the writer passTo chooses by status
// (nil: none).
type captureWriter struct {
	limit    int64
	header   http.Header
	passTo   func(status int) http.ResponseWriter
	out      http.ResponseWriter
	status   int
	body     bytes.Buffer
	overflow bool // the body ran over limit: not stored
	failed   bool // a write to the client failed
}

// Header returns the response's header map.
func (cw *captureWriter) Header() http.Header { return cw.header }

// WriteHeader records the final head and passes it on, with X-Cache: MISS.
func (cw *captureWriter) WriteHeader(status int) {
	if cw.status != 0 {
		return
	}
	if status < 200 {
		if out := cw.passTo(status); out != nil && status != http.StatusSwitchingProtocols {
			out.WriteHeader(status)
		}
		if status != http.StatusSwitchingProtocols {
			return
		}
		cw.overflow = true
	}
	cw.status = status
	cw.out = cw.passTo(status)
	if cw.out == nil {
		return
	}
	h := cw.out.Header()
	for k, vs := range cw.header {
		h[k] = vs
	}
	h["X-Cache"] = []string{Miss}
	cw.out.WriteHeader(status)
}

// Write records and passes on body bytes.
func (cw *captureWriter) Write(b []byte) (int, error) {
	if cw.status == 0 {
		cw.WriteHeader(http.StatusOK)
	}
	if !cw.overflow {
		if int64(cw.body.Len()+len(b)) > cw.limit {
			cw.overflow = true
			cw.body = bytes.Buffer{}
		} else {
			cw.body.Write(b)
		}
	}
	if cw.out == nil {
		return len(b), nil
	}
	n, err := cw.out.Write(b)
	if err != nil {
		cw.failed = true
	}
	return n, err
}

// Flush flushes the client's writer.
func (cw *captureWriter) Flush() {
	if cw.status == 0 {
		cw.WriteHeader(http.StatusOK)
	}
	if f, ok := cw.out.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the client's writer, for http.ResponseController.
func (cw *captureWriter) Unwrap() http.ResponseWriter { return cw.out }
