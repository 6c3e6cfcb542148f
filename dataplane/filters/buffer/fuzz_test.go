package buffer

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	bufferv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/buffer/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/internal/protofuzz"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// FuzzBuffer mutates valid buffer configs (the filter's and a per-route
// one) field by field and runs those the check accepts through the
// factory and the handler, with a body of a length the input picks: never
// a panic, and never more than the limit read.
func FuzzBuffer(f *testing.F) {
	seeds := []proto.Message{
		&bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(16)},
		&bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Buffer{Buffer: &bufferv3.Buffer{MaxRequestBytes: wrapperspb.UInt32(4)}}},
		&bufferv3.BufferPerRoute{Override: &bufferv3.BufferPerRoute_Disabled{Disabled: true}},
	}
	f.Add([]byte{0, 20})
	f.Add([]byte{1, 3, 1, 2, 3})
	f.Add([]byte{2, 200, 9, 8, 7})
	checker, err := xdscheck.New(xdscheckFilter())
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 2 {
			return
		}
		cfg := proto.Clone(seeds[int(data[0])%len(seeds)])
		bodyLen := int(data[1])
		protofuzz.Mutate(cfg, data[2:])
		if checker.Check(cfg) != nil {
			return
		}
		var l limit
		switch c := cfg.(type) {
		case *bufferv3.Buffer:
			built, err := newFilter("buffer", c, httpfilter.Env{})
			if err != nil {
				return
			}
			l = built.(*filter).own
		case *bufferv3.BufferPerRoute:
			per, err := newPerRoute(c)
			if err != nil {
				return
			}
			l = *per.(*limit)
		}
		h := (&filter{name: "buffer", own: l}).Wrap(httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, _ *router.Route) {
			n, _ := io.Copy(io.Discard, r.Body)
			if l.maxBytes > 0 && n > l.maxBytes {
				t.Fatalf("read %d bytes past a limit of %d", n, l.maxBytes)
			}
		}))
		r := httptest.NewRequest("POST", "/", strings.NewReader(strings.Repeat("x", bodyLen)))
		if data[1]%2 == 0 {
			r.ContentLength = -1
		}
		h.ServeHTTP(httptest.NewRecorder(), r, nil)
	})
}
