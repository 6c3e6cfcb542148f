package httpproxy

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/meshgate/meshgate/dataplane/tracing"
)

// countingExporter counts the spans it is given, for every Tracer that
// shares it.
type countingExporter struct{ spans atomic.Int64 }

func (e *countingExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	e.spans.Add(int64(len(spans)))
	return nil
}

func (e *countingExporter) Shutdown(context.Context) error { return nil }

// TestTracerSwapKeepsEveryServerSpan: while requests are served, the
// listener's configuration is replaced again and again, each time with a
// new Tracer, and the one it replaces is closed at once (as the proxy
// retires it). A request that read the configuration just before it was
// replaced has its server span exported all the same, by the old Tracer
// or the new one: as many spans as requests.
func TestTracerSwapKeepsEveryServerSpan(t *testing.T) {
	t.Parallel()
	const (
		clients  = 8
		requests = 1000 // per client
	)
	exp := &countingExporter{}
	newTracer := func() *tracing.Tracer {
		return tracing.NewWithExporter(&tracing.Settings{Service: "edge", Cluster: "c", Timeout: tracing.DefaultExportTimeout, Ratio: 1},
			exp, tracing.Options{QueueSize: clients * requests}, nil) // never full: a span is exported or lost

	}
	routes := table(t, &routev3.Route{Name: "ok", Match: prefix("/"), Action: &routev3.Route_DirectResponse{
		DirectResponse: &routev3.DirectResponseAction{Status: http.StatusOK}}})
	h := NewHandler(nil)
	current := newTracer()
	h.Store(&Config{Routes: routes, Tracer: current})

	var served atomic.Int64
	var wg sync.WaitGroup
	for range clients {
		wg.Go(func() {
			for range requests {
				rec := httptest.NewRecorder()
				h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "http://edge/x", nil))
				if rec.Code != http.StatusOK {
					t.Errorf("status %d", rec.Code)
					return
				}
				served.Add(1)
			}
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	swaps := 0
	for running := true; running; {
		select {
		case <-done:
			running = false
		default:
		}
		next := newTracer()
		h.Store(&Config{Routes: routes, Tracer: next})
		if err := current.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		current = next
		swaps++
	}
	if err := current.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := exp.spans.Load(), served.Load(); got != want {
		t.Errorf("%d server spans exported for %d requests across %d tracer swaps: %d lost", got, want, swaps, want-got)
	}
}
