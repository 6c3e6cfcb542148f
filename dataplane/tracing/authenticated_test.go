package tracing

import (
	"context"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// TestAuthenticated: the principal is the span's enduser.id; nothing
// without a recording span or a principal.
func TestAuthenticated(t *testing.T) {
	t.Parallel()
	exp := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	ctx, span := tp.Tracer("test").Start(context.Background(), "server")
	Authenticated(ctx, "alice")
	span.End()
	_, empty := tp.Tracer("test").Start(context.Background(), "anonymous")
	Authenticated(context.Background(), "nobody") // no span: nothing
	empty.End()
	spans := exp.GetSpans()
	if len(spans) != 2 {
		t.Fatalf("%d spans", len(spans))
	}
	got := map[string]string{}
	for _, s := range spans {
		for _, a := range s.Attributes {
			if a.Key == "enduser.id" {
				got[s.Name] = a.Value.AsString()
			}
		}
	}
	if len(got) != 1 || got["server"] != "alice" {
		t.Errorf("enduser.id = %v, want alice on server only", got)
	}
}
