package openapi_test

import (
	"strings"
	"testing"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/filters"
	"github.com/meshgate/meshgate/dataplane/filters/openapi"
)

// TestRegistered: the default registry knows the filter by its type_url,
// compiles a per-route FilterConfig holding a document, refuses one whose
// document is not OpenAPI 3 with the field named, and reports the
// filter's counter families in /stats before the first count.
func TestRegistered(t *testing.T) {
	t.Parallel()
	r := filters.Default()
	perRoute := func(doc string) *anypb.Any {
		v, err := structpb.NewStruct(map[string]any{"document": doc})
		if err != nil {
			t.Fatal(err)
		}
		ts, err := anypb.New(&xdstypev3.TypedStruct{TypeUrl: openapi.TypeURL, Value: v})
		if err != nil {
			t.Fatal(err)
		}
		fc, err := anypb.New(&routev3.FilterConfig{Config: ts, IsOptional: true})
		if err != nil {
			t.Fatal(err)
		}
		return fc
	}
	good := `{"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {"/a": {"get": {"responses": {"200": {"description": "ok"}}}}}}`
	if _, err := r.CompilePerFilterConfig("meshgate.filters.http.openapi", perRoute(good)); err != nil {
		t.Errorf("a good document: %v", err)
	}
	if _, err := r.CompilePerFilterConfig("meshgate.filters.http.openapi", perRoute(`{"swagger": "2.0"}`)); err == nil || !strings.Contains(err.Error(), "document") {
		t.Errorf("a Swagger 2 document: error %v, want one naming the document", err)
	}
	snap := r.NewStats().Snapshot()
	for _, family := range []string{openapi.StatRequestInvalid, openapi.StatResponseMismatch} {
		if _, ok := snap[family]; !ok {
			t.Errorf("/stats lacks %s before the first count", family)
		}
	}
}
