package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// cacheBackend answers by path, counting what each path received:
// /hit, /purge/*: max-age=60 with a body naming the count; /vary: varies
// on Accept-Language; /nostore: no-store; /etag: max-age=1 with an ETag,
// 304 to a matching If-None-Match; /swr: max-age=1,
// stale-while-revalidate=60; /me: per caller; /slow: max-age=60, held
// until release is closed.
type cacheBackend struct {
	mu      sync.Mutex
	counts  map[string]int
	notMod  atomic.Int64
	release chan struct{}
}

func (cb *cacheBackend) count(path string) int {
	cb.mu.Lock()
	defer cb.mu.Unlock()
	return cb.counts[path]
}

func (cb *cacheBackend) handle(b *testBackend, w http.ResponseWriter, r *http.Request) bool {
	cb.mu.Lock()
	cb.counts[r.URL.Path]++
	n := cb.counts[r.URL.Path]
	cb.mu.Unlock()
	h := w.Header()
	body := fmt.Sprintf("%s #%d", r.URL.Path, n)
	switch path := r.URL.Path; {
	case path == "/hit" || strings.HasPrefix(path, "/purge/"):
		h.Set("Cache-Control", "max-age=60")
	case path == "/vary":
		h.Set("Cache-Control", "max-age=60")
		h.Set("Vary", "Accept-Language")
		body += " " + r.Header.Get("Accept-Language")
	case path == "/nostore":
		h.Set("Cache-Control", "no-store")
	case path == "/etag":
		h.Set("Cache-Control", "max-age=1")
		h.Set("ETag", `"v1"`)
		if r.Header.Get("If-None-Match") == `"v1"` {
			cb.notMod.Add(1)
			w.WriteHeader(http.StatusNotModified)
			return true
		}
		body = "etag body"
	case path == "/swr":
		h.Set("Cache-Control", "max-age=1, stale-while-revalidate=60")
	case path == "/me":
		h.Set("Cache-Control", "max-age=60")
		body += " for " + r.Header.Get("Authorization")
	case path == "/slow":
		h.Set("Cache-Control", "max-age=60")
		select {
		case <-cb.release:
		case <-b.closed:
		}
	default:
		return false
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	_, _ = io.WriteString(w, body)
	return true
}

// TestResponseCache: a gateway route with a TrafficPolicy cache section
// serves stored responses (HIT, with Age) without asking the backend,
// keeps a variant per Vary value, never stores no-store, revalidates with
// the ETag (the backend's 304 served as a HIT), serves STALE within
// stale-while-revalidate while refreshing in the background, keeps
// responses to authenticated requests per caller, makes one upstream
// request for 100 concurrent misses, and forgets what meshgate cache
// purge removes.
func TestResponseCache(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cb := &cacheBackend{counts: map[string]int{}, release: make(chan struct{})}
	startTestBackend(c, "origin", cb.handle)
	c.policy("cache.yaml", yamlDocs(edgeGateway, routeTo("origin"), serviceOf("origin", "origin"),
		trafficPolicy("origin-cache", "origin", "  cache: {maxCacheBytes: 16777216}\n")))
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	eventually(t, 15*time.Second, "the cache on the gateway route", func() error {
		r, err := get(gw + "/warm")
		if err != nil {
			return err
		}
		if r.status != http.StatusOK || r.header.Get("X-Cache") != "MISS" {
			return fmt.Errorf("%d X-Cache %q %.200s", r.status, r.header.Get("X-Cache"), r.body)
		}
		return nil
	})
	fetch := func(t *testing.T, path, wantCache string, headers ...string) *response {
		t.Helper()
		r, err := get(gw+path, headers...)
		if err != nil {
			t.Fatal(err)
		}
		if r.status != http.StatusOK || r.header.Get("X-Cache") != wantCache {
			t.Fatalf("GET %s %v: %d X-Cache %q (%q), want 200 %s", path, headers, r.status, r.header.Get("X-Cache"), r.body, wantCache)
		}
		return r
	}

	t.Run("hit and miss", func(t *testing.T) {
		fetch(t, "/hit", "MISS")
		r := fetch(t, "/hit", "HIT")
		if r.body != "/hit #1" || r.header.Get("Age") == "" || cb.count("/hit") != 1 {
			t.Errorf("hit: body %q Age %q, backend saw %d", r.body, r.header.Get("Age"), cb.count("/hit"))
		}
	})
	t.Run("vary", func(t *testing.T) {
		fetch(t, "/vary", "MISS", "Accept-Language: en")
		fetch(t, "/vary", "MISS", "Accept-Language: fr")
		if r := fetch(t, "/vary", "HIT", "Accept-Language: en"); !strings.HasSuffix(r.body, " en") {
			t.Errorf("en variant: %q", r.body)
		}
		if r := fetch(t, "/vary", "HIT", "Accept-Language: fr"); !strings.HasSuffix(r.body, " fr") || cb.count("/vary") != 2 {
			t.Errorf("fr variant: %q, backend saw %d", r.body, cb.count("/vary"))
		}
	})
	t.Run("no-store", func(t *testing.T) {
		fetch(t, "/nostore", "MISS")
		fetch(t, "/nostore", "MISS")
		if cb.count("/nostore") != 2 {
			t.Errorf("backend saw %d, want 2", cb.count("/nostore"))
		}
	})
	t.Run("revalidation", func(t *testing.T) {
		fetch(t, "/etag", "MISS")
		// Once the second of max-age has passed, a request is revalidated:
		// the backend answers 304 and the stored body is served as a HIT.
		eventually(t, 10*time.Second, "a revalidated hit", func() error {
			r := fetch(t, "/etag", "HIT")
			if cb.notMod.Load() == 0 {
				return fmt.Errorf("no 304 yet")
			}
			if r.body != "etag body" {
				return fmt.Errorf("body %q", r.body)
			}
			return nil
		})
		if cb.count("/etag") < 2 {
			t.Errorf("backend saw %d requests, want the first and a conditional one", cb.count("/etag"))
		}
	})
	t.Run("stale-while-revalidate", func(t *testing.T) {
		fetch(t, "/swr", "MISS")
		eventually(t, 10*time.Second, "a stale response", func() error {
			r, err := get(gw + "/swr")
			if err != nil {
				return err
			}
			if got := r.header.Get("X-Cache"); got != "STALE" {
				return fmt.Errorf("X-Cache %q", got)
			}
			if r.body != "/swr #1" {
				return fmt.Errorf("stale body %q", r.body)
			}
			return nil
		})
		eventually(t, 10*time.Second, "the background refresh", func() error {
			if n := cb.count("/swr"); n < 2 {
				return fmt.Errorf("backend saw %d", n)
			}
			return nil
		})
	})
	t.Run("per principal", func(t *testing.T) {
		fetch(t, "/me", "MISS", "Authorization: Bearer alice")
		fetch(t, "/me", "MISS", "Authorization: Bearer bob")
		if r := fetch(t, "/me", "HIT", "Authorization: Bearer alice"); !strings.HasSuffix(r.body, "alice") {
			t.Errorf("alice got %q", r.body)
		}
		if r := fetch(t, "/me", "HIT", "Authorization: Bearer bob"); !strings.HasSuffix(r.body, "bob") {
			t.Errorf("bob got %q", r.body)
		}
		fetch(t, "/me", "MISS")
		if cb.count("/me") != 3 {
			t.Errorf("backend saw %d, want 3 (alice, bob, anonymous)", cb.count("/me"))
		}
	})
	t.Run("coalescing", func(t *testing.T) {
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for range 100 {
			wg.Go(func() {
				r, err := get(gw + "/slow")
				switch {
				case err != nil:
					errs <- err
				case r.status != http.StatusOK || r.body != "/slow #1":
					errs <- fmt.Errorf("%d %q", r.status, r.body)
				}
			})
		}
		eventually(t, 10*time.Second, "the first request at the backend", func() error {
			if cb.count("/slow") == 0 {
				return fmt.Errorf("none yet")
			}
			return nil
		})
		close(cb.release)
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := cb.count("/slow"); n != 1 {
			t.Errorf("%d upstream requests for 100 concurrent misses, want 1", n)
		}
	})
	t.Run("purge", func(t *testing.T) {
		fetch(t, "/purge/a", "MISS")
		fetch(t, "/purge/b", "MISS")
		fetch(t, "/purge/a", "HIT")
		out, err := c.cli("cache", "purge", "--gateway", "edge", "--prefix", "/purge/a")
		if err != nil || !strings.Contains(out, "purged 1 stored responses") {
			t.Fatalf("purge: %v %q", err, out)
		}
		fetch(t, "/purge/a", "MISS")
		fetch(t, "/purge/b", "HIT")
		if _, err := c.cli("cache", "purge", "--gateway", "no-such-gateway"); err == nil {
			t.Error("purging an unknown gateway: no error")
		}
	})
	t.Run("stats", func(t *testing.T) {
		r, err := get("http://" + c.addr("gateway-admin-edge") + "/stats")
		if err != nil {
			t.Fatal(err)
		}
		var stats struct {
			Cache map[string]uint64 `json:"response_cache"`
		}
		if err := json.Unmarshal([]byte(r.body), &stats); err != nil {
			t.Fatalf("/stats: %v: %.300s", err, r.body)
		}
		if stats.Cache["hit"] == 0 || stats.Cache["miss"] == 0 || stats.Cache["stale"] == 0 || stats.Cache["revalidated"] == 0 {
			t.Errorf("/stats response_cache: %v, want hits, misses, stale and revalidated responses counted", stats.Cache)
		}
	})
}
