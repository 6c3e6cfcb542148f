package cache

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"github.com/meshgate/meshgate/dataplane/router"
)

// FuzzCache runs responses with headers the input picks (Cache-Control,
// Expires, Vary, ETag, Age, a status) through a cached route twice, the
// second request with request headers the input picks: never a panic,
// never a negative Age, a stored response served with its status and
// body, and nothing no-store or private ever served from the cache.
func FuzzCache(f *testing.F) {
	f.Add("max-age=60", "", "", `"a"`, "", 200, "", "")
	f.Add("s-maxage=5, max-age=abc", "Thu, 01 Jan 1970 00:00:00 GMT", "Accept", "", "100", 404, "no-cache", "text/html")
	f.Add("no-store, max-age=60", "", "*", "", "-3", 200, "max-age=0", "")
	f.Add("private, stale-while-revalidate=99999999999999999999", "bad", "", `W/"x"`, "", 301, "", "")
	f.Fuzz(func(t *testing.T, cacheControl, expires, vary, etag, age string, status int, reqCacheControl, accept string) {
		if status < 200 || status > 599 {
			return
		}
		header := http.Header{}
		for k, v := range map[string]string{"Cache-Control": cacheControl, "Expires": expires, "Vary": vary, "Etag": etag, "Age": age} {
			if v != "" {
				header.Set(k, v)
			}
		}
		hs := newHarness(t, map[string]any{"stale_while_revalidate_seconds": 5}, &backend{})
		calls := 0
		upstream := func(w http.ResponseWriter, r *http.Request, _ *router.Route) {
			calls++
			for k, v := range header {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", "4")
			w.WriteHeader(status)
			_, _ = w.Write([]byte("body"))
		}
		h := hs.f.Wrap(handlerFunc(upstream))
		for i := range 2 {
			r := httptest.NewRequest(http.MethodGet, "http://example.com/cached", nil)
			if i == 1 {
				if reqCacheControl != "" {
					r.Header.Set("Cache-Control", reqCacheControl)
				}
				if accept != "" {
					r.Header.Set("Accept", accept)
				}
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r, hs.tbl.Match(r))
			if x := w.Header().Get("X-Cache"); x == Hit || x == Stale {
				cc := parseCacheControl(header)
				if cc.noStore || cc.private {
					t.Fatalf("a %s response served from the cache", cacheControl)
				}
				if n, err := strconv.Atoi(w.Header().Get("Age")); err != nil || n < 0 {
					t.Fatalf("Age %q", w.Header().Get("Age"))
				}
				if w.Code != status && w.Code != http.StatusNotModified || w.Code == status && w.Body.String() != "body" {
					t.Fatalf("served %d %q, stored %d", w.Code, w.Body.String(), status)
				}
			}
			hs.advance(time.Second)
		}
		if calls == 0 {
			t.Fatal("nothing reached the backend")
		}
	})
}

type handlerFunc func(http.ResponseWriter, *http.Request, *router.Route)

func (f handlerFunc) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) { f(w, r, rt) }
