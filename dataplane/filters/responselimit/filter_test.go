package responselimit

import (
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

func value(t testing.TB, fields map[string]any) *structpb.Struct {
	t.Helper()
	v, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// upstream answers like the router: the head with or without a
// Content-Length, then the body in chunks of 4 bytes.
func upstream(body int, withLength bool, status int) httpfilter.Handler {
	return httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) {
		w.Header()["X-Upstream"] = []string{"yes"}
		if withLength {
			w.Header()["Content-Length"] = []string{strconv.Itoa(body)}
		}
		w.WriteHeader(status)
		chunk := []byte("xxxx")
		for left := body; left > 0; left -= len(chunk) {
			if _, err := w.Write(chunk[:min(left, len(chunk))]); err != nil {
				return
			}
		}
	})
}

// TestLimits: a Content-Length over the limit gets the 502 naming it
// before anything of the response is written; a body without a length is
// aborted (http.ErrAbortHandler) when it runs over, with at most the limit
// written; HEAD, 204 and 304 are not counted; within the limit the
// response passes unchanged.
func TestLimits(t *testing.T) {
	t.Parallel()
	f, err := newFilter("limit", value(t, map[string]any{"max_response_bytes": 8}), httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		method     string
		status     int
		body       int
		withLength bool
		wantStatus int
		wantBody   string // "": the upstream's
		wantAbort  bool
	}{
		{name: "length within", body: 8, withLength: true, wantStatus: 200},
		{name: "no length, within", body: 8, wantStatus: 200},
		{name: "length over", body: 9, withLength: true, wantStatus: 502, wantBody: "response body over the route's limit of 8 bytes"},
		{name: "error status over", status: 500, body: 100, withLength: true, wantStatus: 502, wantBody: "response body over the route's limit of 8 bytes"},
		{name: "no length, over", body: 100, wantAbort: true},
		{name: "HEAD", method: http.MethodHead, body: 100, withLength: true, wantStatus: 200},
		{name: "not modified", status: http.StatusNotModified, withLength: true, body: 0, wantStatus: 304},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(cmpOr(tc.method, http.MethodGet), "/", nil)
			w := httptest.NewRecorder()
			status := tc.status
			if status == 0 {
				status = 200
			}
			h := f.Wrap(upstream(tc.body, tc.withLength, status))
			aborted := func() (aborted bool) {
				defer func() {
					if p := recover(); p != nil {
						if p != http.ErrAbortHandler { //nolint:errorlint // the sentinel net/http compares
							panic(p)
						}
						aborted = true
					}
				}()
				h.ServeHTTP(w, req, nil)
				return false
			}()
			if aborted != tc.wantAbort {
				t.Fatalf("aborted %v, want %v", aborted, tc.wantAbort)
			}
			if tc.wantAbort {
				if w.Body.Len() > 8 {
					t.Errorf("%d bytes written before the abort, want at most 8", w.Body.Len())
				}
				return
			}
			if w.Code != tc.wantStatus {
				t.Errorf("status %d, want %d", w.Code, tc.wantStatus)
			}
			if tc.wantBody != "" {
				if w.Body.String() != tc.wantBody || w.Header().Get("X-Upstream") != "" {
					t.Errorf("body %q, headers %v; want %q without the upstream's headers", w.Body.String(), w.Header(), tc.wantBody)
				}
				return
			}
			if tc.method != http.MethodHead && w.Body.Len() != tc.body || w.Header().Get("X-Upstream") != "yes" {
				t.Errorf("%d bytes, headers %v; want the upstream's %d", w.Body.Len(), w.Header(), tc.body)
			}
		})
	}
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// TestNoLimitNoCost: on a route without a limit (the filter's value {}),
// the filter passes the writer through without allocating.
func TestNoLimitNoCost(t *testing.T) {
	f, err := newFilter("limit", value(t, nil), httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	var got http.ResponseWriter
	h := f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, _ *http.Request, _ *router.Route) { got = w }))
	req := httptest.NewRequest(http.MethodGet, "/", nil)
	allocs := testing.AllocsPerRun(100, func() { h.ServeHTTP(w, req, nil) })
	if allocs != 0 || got != w {
		t.Errorf("%v allocations, writer %T; want none, the writer unchanged", allocs, got)
	}
}

// TestValues: the subset admits {} and a whole max_response_bytes from 1
// to 1 GiB, and nothing else; per-route values compile.
func TestValues(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name    string
		fields  map[string]any
		want    int64
		wantErr string
	}{
		{name: "none", fields: nil, want: 0},
		{name: "limit", fields: map[string]any{"max_response_bytes": 1024}, want: 1024},
		{name: "1 GiB", fields: map[string]any{"max_response_bytes": MaxResponseBytes}, want: MaxResponseBytes},
		{name: "zero", fields: map[string]any{"max_response_bytes": 0}, wantErr: "max_response_bytes: 0: want a whole number from 1 to 1073741824"},
		{name: "over 1 GiB", fields: map[string]any{"max_response_bytes": MaxResponseBytes + 1}, wantErr: "want a whole number"},
		{name: "fraction", fields: map[string]any{"max_response_bytes": 1.5}, wantErr: "want a whole number"},
		{name: "string", fields: map[string]any{"max_response_bytes": "1024"}, wantErr: "max_response_bytes: want a number"},
		{name: "unknown field", fields: map[string]any{"max_request_bytes": 1}, wantErr: `value."max_request_bytes": not supported`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := Factory()
			v := value(t, tc.fields)
			var errs []string
			for _, viol := range f.CheckValue(v) {
				errs = append(errs, "value."+viol.Path+": "+viol.Reason)
			}
			if tc.wantErr != "" {
				if !strings.Contains(strings.Join(errs, "; "), tc.wantErr) {
					t.Fatalf("violations %v, want %q", errs, tc.wantErr)
				}
				return
			}
			if len(errs) > 0 {
				t.Fatalf("violations %v", errs)
			}
			got, err := newPerRoute(v)
			if err != nil || got.(*limit).maxBytes != tc.want {
				t.Fatalf("got %v, %v; want a limit of %d", got, err, tc.want)
			}
		})
	}
	f := Factory()
	if _, err := xdscheck.New(f.Subset()); err != nil {
		t.Fatal(err)
	}
}
