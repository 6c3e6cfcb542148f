package responselimit

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
)

// FuzzResponseLimit runs values the check accepts (a max_response_bytes
// the input picks, possibly bad) through the factory and the handler with
// a response of a length the input picks, with or without a
// Content-Length: never a panic but the abort, and never more than the
// limit written.
func FuzzResponseLimit(f *testing.F) {
	f.Add(float64(8), 20, true)
	f.Add(float64(8), 4, false)
	f.Add(float64(-1), 4, false)
	f.Add(1.5, 4, true)
	f.Fuzz(func(t *testing.T, limitValue float64, bodyLen int, withLength bool) {
		if bodyLen < 0 || bodyLen > 1<<16 {
			return
		}
		v := &structpb.Struct{Fields: map[string]*structpb.Value{maxResponseBytesField: structpb.NewNumberValue(limitValue)}}
		if len(checkValue(v)) > 0 {
			return
		}
		built, err := newFilter("limit", v, httpfilter.Env{})
		if err != nil {
			t.Fatalf("a checked value failed to compile: %v", err)
		}
		limitBytes := built.(*filter).own.maxBytes
		w := httptest.NewRecorder()
		func() {
			defer func() {
				if p := recover(); p != nil && p != http.ErrAbortHandler { //nolint:errorlint // the sentinel net/http compares
					panic(p)
				}
			}()
			built.Wrap(upstream(bodyLen, withLength, http.StatusOK)).ServeHTTP(w, httptest.NewRequest("GET", "/", nil), nil)
		}()
		if w.Code == http.StatusOK && int64(w.Body.Len()) > limitBytes {
			t.Fatalf("%d bytes written past a limit of %d", w.Body.Len(), limitBytes)
		}
	})
}
