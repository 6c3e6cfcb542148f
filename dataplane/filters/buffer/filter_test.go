package buffer

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// TestLimits: the filter's own limit, a Content-Length over it answered
// 413 without calling next, a body without a length cut off past it with
// ErrRequestBodyTooLarge after at most the limit was read.
func TestLimits(t *testing.T) {
	t.Parallel()
	f, err := newFilter("buf", &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(8)}, httpfilter.Env{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		body       int
		unknownLen bool
		wantStatus int  // 0: next answered
		wantRead   int  // bytes next read
		wantErr    bool // next's read failed with ErrRequestBodyTooLarge
	}{
		{name: "within", body: 8, wantRead: 8},
		{name: "within, no length", body: 8, unknownLen: true, wantRead: 8},
		{name: "length over", body: 9, wantStatus: http.StatusRequestEntityTooLarge},
		{name: "no length, over", body: 100, unknownLen: true, wantErr: true},
		{name: "no body", body: 0, wantRead: 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(strings.Repeat("x", tc.body)))
			if tc.unknownLen {
				req.ContentLength = -1
			}
			called, read := false, 0
			var readErr error
			h := f.Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, _ *router.Route) {
				called = true
				var b []byte
				b, readErr = io.ReadAll(r.Body)
				read = len(b)
			}))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req, nil)
			if tc.wantStatus != 0 {
				if called || w.Code != tc.wantStatus || w.Body.String() != bodyTooLarge {
					t.Errorf("next called %v, %d %q; want %d %q without next", called, w.Code, w.Body.String(), tc.wantStatus, bodyTooLarge)
				}
				return
			}
			if tc.wantErr {
				if !errors.Is(readErr, httpfilter.ErrRequestBodyTooLarge) || read > 8 {
					t.Errorf("read %d bytes, error %v; want at most 8, then ErrRequestBodyTooLarge", read, readErr)
				}
				return
			}
			if readErr != nil || read != tc.wantRead {
				t.Errorf("read %d bytes, error %v; want %d", read, readErr, tc.wantRead)
			}
		})
	}
}

// TestPerRoute: per-route configs compile, disabled to no limit; an
// empty BufferPerRoute (the check) and out-of-range limits are refused.
func TestPerRoute(t *testing.T) {
	t.Parallel()
	checker, err := xdscheck.New(xdscheckFilter())
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		per     *bufferv3.BufferPerRoute
		want    int64
		wantErr string
	}{
		{name: "disabled", per: &bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Disabled{Disabled: true}}, want: 0},
		{name: "limit", per: &bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Buffer{Buffer: &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(1024)}}}, want: 1024},
		{name: "over 1 GiB", per: &bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Buffer{Buffer: &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(MaxRequestBytes + 1)}}}, wantErr: "buffer.max_request_bytes"},
		{name: "empty", per: &bufferv3.BufferPerRoute{}, wantErr: "value is required"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := checker.Check(tc.per)
			var got any
			if err == nil {
				got, err = newPerRoute(tc.per)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got.(*limit).maxBytes != tc.want {
				t.Fatalf("got %v, %v; want a limit of %d", got, err, tc.want)
			}
		})
	}
}

func xdscheckFilter() xdscheck.HTTPFilter {
	f := Factory()
	return f.Subset()
}
