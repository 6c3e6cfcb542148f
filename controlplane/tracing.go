package controlplane

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// ControlPlaneServiceName is the service.name of the control plane's spans.
const ControlPlaneServiceName = "meshgate-controlplane"

// Export settings of the control plane's spans: a change is a handful of
// spans, so a small queue, flushed within a second.
const (
	cpTraceQueue   = 256
	cpTraceFlush   = time.Second
	cpTraceTimeout = 5 * time.Second
)

// reloadTrace is what one reload did, and when: the spans of a change are
// made from it afterwards (so that a reload that changes nothing, or a
// mesh that does not trace, costs no span).
type reloadTrace struct {
	start, read, compiled, pushed time.Time
	// version is the model version served after the reload, input the
	// version of the policy read.
	version, input string
	// resources and problems are the policy's resources and its errors.
	resources, problems int
	// connected proxies, and how many got a new configuration.
	connected, updated int
	err                error
}

// cpTracer sends the control plane's spans to the mesh's collector: one
// trace per policy change (reload → load, evaluate and compile, translate
// and push). Without MeshConfig spec.tracing it holds no provider and
// costs nothing. Used by reloads only (they are serial), and by close.
type cpTracer struct {
	exporter func(t *model.Tracing) (sdktrace.SpanExporter, error)
	// lastInput is the policy version of the last reload.
	lastInput string
	key       string
	provider  *sdktrace.TracerProvider
	tracer    trace.Tracer
}

// tracerFor returns the tracer of the mesh's tracing t, building (or
// replacing) its provider when t changed; nil without tracing or when the
// exporter cannot be built (logged by the caller through the error).
func (c *cpTracer) tracerFor(t *model.Tracing) (trace.Tracer, error) {
	key := tracingKey(t)
	if key == c.key {
		return c.tracer, nil
	}
	c.close()
	c.key = key
	if t == nil {
		return nil, nil
	}
	newExporter := c.exporter
	if newExporter == nil {
		newExporter = otlpExporter
	}
	exp, err := newExporter(t)
	if err != nil {
		return nil, fmt.Errorf("control plane tracing to %s: %w", t.Endpoint, err)
	}
	attrs := []attribute.KeyValue{attribute.String("service.name", ControlPlaneServiceName)}
	for _, k := range slices.Sorted(maps.Keys(t.Attributes)) {
		attrs = append(attrs, attribute.String(k, t.Attributes[k]))
	}
	c.provider = sdktrace.NewTracerProvider(
		sdktrace.WithResource(resource.NewSchemaless(attrs...)),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
		sdktrace.WithBatcher(exp, sdktrace.WithMaxQueueSize(cpTraceQueue), sdktrace.WithBatchTimeout(cpTraceFlush),
			sdktrace.WithExportTimeout(cpTraceTimeout)),
	)
	c.tracer = c.provider.Tracer("github.com/meshgate/meshgate/controlplane")
	return c.tracer, nil
}

// close exports what is queued (in the background, bounded) and drops the
// provider.
func (c *cpTracer) close() {
	if c.provider == nil {
		return
	}
	p := c.provider
	c.provider, c.tracer, c.key = nil, nil, ""
	go shutdownProvider(p)
}

// shutdown exports what is queued (bounded) and drops the provider: the
// control plane stops.
func (c *cpTracer) shutdown() {
	if c.provider != nil {
		shutdownProvider(c.provider)
		c.provider, c.tracer, c.key = nil, nil, ""
	}
}

func shutdownProvider(p *sdktrace.TracerProvider) {
	ctx, cancel := context.WithTimeout(context.Background(), cpTraceTimeout)
	defer cancel()
	_ = p.Shutdown(ctx)
}

// tracingKey identifies a tracing configuration ("" for none).
func tracingKey(t *model.Tracing) string {
	if t == nil {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s", t.Protocol, t.Endpoint)
	for _, k := range slices.Sorted(maps.Keys(t.Attributes)) {
		fmt.Fprintf(&b, " %q=%q", k, t.Attributes[k])
	}
	return b.String()
}

// otlpExporter exports to the mesh's collector over OTLP (gRPC or HTTP),
// as the proxies do.
func otlpExporter(t *model.Tracing) (sdktrace.SpanExporter, error) {
	ctx := context.Background()
	if t.Protocol == policy.TracingProtocolHTTP {
		return otlptracehttp.New(ctx, otlptracehttp.WithEndpoint(t.Endpoint), otlptracehttp.WithInsecure(),
			otlptracehttp.WithTimeout(cpTraceTimeout))
	}
	return otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(t.Endpoint), otlptracegrpc.WithInsecure(),
		otlptracegrpc.WithTimeout(cpTraceTimeout))
}

// record makes the spans of one reload with tracer: "policy reload", the
// root, with "policy load" (reading the files or the source), "policy
// evaluate" (validation and compilation) and, when it was served,
// "translate and push" (every connected proxy's configuration translated
// and handed to its stream).
func record(tracer trace.Tracer, r reloadTrace) {
	end := r.pushed
	if end.IsZero() {
		end = r.compiled
	}
	ctx, root := tracer.Start(context.Background(), "policy reload", trace.WithTimestamp(r.start),
		trace.WithAttributes(
			attribute.String("meshgate.policy.version", r.version),
			attribute.Int("meshgate.policy.resources", r.resources),
			attribute.Int("meshgate.policy.errors", r.problems),
			attribute.Int("meshgate.proxies.connected", r.connected),
			attribute.Int("meshgate.proxies.updated", r.updated),
		))
	child := func(name string, from, to time.Time, attrs ...attribute.KeyValue) {
		if from.IsZero() || to.IsZero() {
			return
		}
		_, span := tracer.Start(ctx, name, trace.WithTimestamp(from), trace.WithAttributes(attrs...))
		span.End(trace.WithTimestamp(to))
	}
	child("policy load", r.start, r.read)
	child("policy evaluate", r.read, r.compiled,
		attribute.Int("meshgate.policy.resources", r.resources), attribute.Int("meshgate.policy.errors", r.problems))
	child("translate and push", r.compiled, r.pushed,
		attribute.Int("meshgate.proxies.connected", r.connected), attribute.Int("meshgate.proxies.updated", r.updated))
	if r.err != nil {
		root.SetStatus(codes.Error, r.err.Error())
	}
	root.End(trace.WithTimestamp(end))
}

// traceReload records the spans of a reload when the mesh traces and the
// reload changed something: a new version served, a new rejection, or a
// policy edit (even one whose resources were rejected and keep their last
// good version).
func (cp *ControlPlane) traceReload(r reloadTrace, changed bool) {
	if r.input != "" && r.input != cp.traces.lastInput {
		changed = cp.traces.lastInput != "" || changed
		cp.traces.lastInput = r.input
	}
	var t *model.Tracing
	if m := cp.model.Load(); m != nil {
		t = m.Mesh.Tracing
	}
	tracer, err := cp.traces.tracerFor(t)
	if err != nil {
		cp.logger.Warn("control plane spans are not exported", "error", err)
		return
	}
	if tracer == nil || !changed {
		return
	}
	r.connected = cp.xds.Connected()
	record(tracer, r)
}

// countErrors is the number of problems err lists (a policy.ErrorList), 1
// for another error.
func countErrors(err error) int {
	var list policy.ErrorList
	if errors.As(err, &list) {
		return len(list)
	}
	return 1
}
