package httpfilter

import (
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
)

func TestCounters(t *testing.T) {
	t.Parallel()
	var s Stats
	c := s.Counters("denied")
	done := make(chan struct{})
	for range 8 {
		go func() {
			defer func() { done <- struct{}{} }()
			for range 100 {
				c.Inc("a")
				s.Counters("denied").Inc("b")
			}
		}()
	}
	for range 8 {
		<-done
	}
	snap := c.Snapshot()
	if snap["a"] != 800 || snap["b"] != 800 || len(snap) != 2 {
		t.Fatalf("Snapshot = %v", snap)
	}
	if c.Get("a") != 800 || c.Get("missing") != 0 {
		t.Errorf("Get = %d %d", c.Get("a"), c.Get("missing"))
	}
	s.Counters("empty")
	all := s.Snapshot()
	if len(all) != 2 || all["denied"]["a"] != 800 || all["empty"] == nil || len(all["empty"]) != 0 {
		t.Errorf("Stats.Snapshot = %v", all)
	}
	var nilStats *Stats
	nilCounters := nilStats.Counters("x")
	nilCounters.Inc("x") // must not panic
	if len(nilCounters.Snapshot()) != 0 || len(nilStats.Snapshot()) != 0 || nilCounters.Get("x") != 0 {
		t.Error("nil Stats has counters")
	}
}

func TestCountersIncDoesNotAllocate(t *testing.T) {
	var c Counters
	c.Inc("a")
	if a := testing.AllocsPerRun(100, func() { c.Inc("a") }); a != 0 {
		t.Errorf("Inc of a known key allocates %v times", a)
	}
}

// hookCalls records BeforeResponse calls.
type hookCalls struct{ statuses []int }

func (h *hookCalls) BeforeResponse(status int, header http.Header) {
	h.statuses = append(h.statuses, status)
	header.Set("X-Hooked", "1")
}

func TestResponseWriter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		write  func(w http.ResponseWriter)
		status int
		calls  []int
	}{
		{"WriteHeader then Write", func(w http.ResponseWriter) { w.WriteHeader(404); _, _ = w.Write([]byte("x")) }, 404, []int{404}},
		{"Write alone", func(w http.ResponseWriter) { _, _ = w.Write([]byte("x")) }, 200, []int{200}},
		{"Flush first", func(w http.ResponseWriter) { w.(http.Flusher).Flush(); _, _ = w.Write([]byte("x")) }, 200, []int{200}},
		// (httptest's recorder keeps the 103 as its Code: not checked.)
		{"1xx then final", func(w http.ResponseWriter) { w.WriteHeader(103); w.WriteHeader(204) }, 0, []int{204}},
		{"ResponseController", func(w http.ResponseWriter) {
			w.WriteHeader(201)
			if err := http.NewResponseController(w).Flush(); err != nil {
				panic(err)
			}
		}, 201, []int{201}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			rec := httptest.NewRecorder()
			hook := &hookCalls{}
			var rw ResponseWriter
			rw.Reset(rec, hook)
			tc.write(&rw)
			if (tc.status != 0 && rec.Code != tc.status) || !slices.Equal(hook.statuses, tc.calls) || rec.Header().Get("X-Hooked") != "1" {
				t.Errorf("status %d, hook calls %v, headers %v; want %d, %v", rec.Code, hook.statuses, rec.Header(), tc.status, tc.calls)
			}
		})
	}
}

func TestLocalReply(t *testing.T) {
	t.Parallel()
	w := httptest.NewRecorder()
	LocalReply(w, nil, http.StatusForbidden, "access denied\n")
	if w.Code != 403 || w.Body.String() != "access denied\n" || w.Header().Get("Content-Type") != "text/plain; charset=utf-8" || w.Header().Get("Content-Length") != "14" {
		t.Errorf("LocalReply: %d %q %v", w.Code, w.Body.String(), w.Header())
	}
}
