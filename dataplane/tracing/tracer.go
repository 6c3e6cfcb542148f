package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/peer"
)

// Export queue defaults (Options).
const (
	DefaultQueueSize     = 2048
	DefaultBatchSize     = 512
	DefaultFlushInterval = time.Second
	// collectorDialTimeout bounds a connection to the collector.
	collectorDialTimeout = 5 * time.Second
)

// Resolver returns an endpoint (ip:port) of the named cluster, or false
// when it has none. It is called when the exporter connects, from the
// exporter's goroutine.
type Resolver func(cluster string) (string, bool)

// Options tune a Tracer's export queue; zero values take the defaults.
type Options struct {
	// QueueSize bounds the spans waiting for export; beyond it spans are
	// dropped (and counted), never waited for.
	QueueSize int
	// BatchSize is the most spans sent in one export.
	BatchSize int
	// FlushInterval is how long a span waits at most before its batch is
	// sent.
	FlushInterval time.Duration
}

// Tracer traces the requests of the listeners that share its Settings. It
// is safe for concurrent use.
type Tracer struct {
	settings  *Settings
	provider  *sdktrace.TracerProvider
	tracer    trace.Tracer
	queue     *queue
	closeConn func() error

	traceContext propagation.TraceContext
	b3           propagation.TextMapPropagator
	tags         []attribute.KeyValue

	// inFlight counts the requests held (Hold) and the server spans
	// started and not ended: Close waits for them (a listener's tracer is
	// replaced while requests it traces are still being served). Once
	// closing is set and inFlight drops to zero it becomes drained, for
	// good, and idle is closed: Hold fails from then on.
	inFlight atomic.Int64
	closing  atomic.Bool
	idle     chan struct{}
}

// drained is Tracer.inFlight once its Close no longer waits: far below
// zero, so that no number of Holds brings it back up.
const drained = math.MinInt64 / 4

// New builds the Tracer of s: its exporter connects, when it first has spans
// to send, to an endpoint resolve gives for s.Cluster. logger may be nil.
func New(s *Settings, resolve Resolver, opts Options, logger *slog.Logger) (*Tracer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	dial := func(ctx context.Context, _ string) (net.Conn, error) {
		endpoint, ok := resolve(s.Cluster)
		if !ok {
			return nil, fmt.Errorf("tracing collector cluster %q: no endpoint", s.Cluster)
		}
		d := net.Dialer{Timeout: collectorDialTimeout}
		return d.DialContext(ctx, "tcp", endpoint)
	}
	var exporter sdktrace.SpanExporter
	closeConn := func() error { return nil }
	switch s.Protocol {
	case GRPC:
		// The target is never resolved: the dialer picks the cluster's
		// endpoint at each connection.
		conn, err := grpc.NewClient("passthrough:///"+s.Cluster,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(dial),
			// A collector back after an outage is reconnected to within
			// seconds (gRPC's default backoff grows to two minutes).
			grpc.WithConnectParams(grpc.ConnectParams{
				Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
				MinConnectTimeout: collectorDialTimeout,
			}))
		if err != nil {
			return nil, fmt.Errorf("tracing: collector connection: %w", err)
		}
		closeConn = conn.Close
		exporter, err = otlptracegrpc.New(context.Background(),
			otlptracegrpc.WithGRPCConn(conn),
			otlptracegrpc.WithTimeout(s.Timeout),
			otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{Enabled: false}))
		if err != nil {
			_ = conn.Close()
			return nil, fmt.Errorf("tracing: OTLP/gRPC exporter: %w", err)
		}
	case HTTP:
		// The URL's host is the Host header only: the dialer picks the
		// cluster's endpoint at each connection.
		transport := &http.Transport{
			DialContext:           func(ctx context.Context, _, addr string) (net.Conn, error) { return dial(ctx, addr) },
			MaxIdleConnsPerHost:   2,
			ResponseHeaderTimeout: s.Timeout,
		}
		authority := s.Authority
		if authority == "" {
			authority = s.Cluster
		}
		var err error
		exporter, err = otlptracehttp.New(context.Background(),
			otlptracehttp.WithEndpoint(authority),
			otlptracehttp.WithURLPath(s.URLPath),
			otlptracehttp.WithInsecure(),
			otlptracehttp.WithHTTPClient(&http.Client{Transport: transport, Timeout: s.Timeout}),
			otlptracehttp.WithTimeout(s.Timeout),
			otlptracehttp.WithRetry(otlptracehttp.RetryConfig{Enabled: false}))
		if err != nil {
			return nil, fmt.Errorf("tracing: OTLP/HTTP exporter: %w", err)
		}
	default:
		return nil, fmt.Errorf("tracing: protocol %d not supported", s.Protocol)
	}
	t := NewWithExporter(s, exporter, opts, logger)
	t.closeConn = closeConn
	return t, nil
}

// NewWithExporter builds a Tracer of s that hands its spans to exporter
// (New's exporter sends them to the collector). logger may be nil.
func NewWithExporter(s *Settings, exporter sdktrace.SpanExporter, opts Options, logger *slog.Logger) *Tracer {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	q := newQueue(exporter, opts, s.Timeout, logger.With("tracing_cluster", s.Cluster))
	res := resource.NewSchemaless(attribute.String("service.name", s.Service))
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithResource(res),
		sdktrace.WithSampler(sdktrace.ParentBased(routeSampler{def: sdktrace.TraceIDRatioBased(s.Ratio)})),
		sdktrace.WithSpanProcessor(q),
	)
	return &Tracer{
		settings:  s,
		provider:  provider,
		tracer:    provider.Tracer("github.com/meshgate/meshgate/dataplane"),
		queue:     q,
		closeConn: func() error { return nil },
		b3:        b3.New(),
		tags:      s.Tags,
		idle:      make(chan struct{}),
	}
}

// Settings returns the settings t was built from.
func (t *Tracer) Settings() *Settings { return t.settings }

// Stats are a Tracer's export counters since it was built.
type Stats struct {
	// Exported spans the collector accepted.
	Exported uint64 `json:"exported"`
	// Dropped spans: the queue was full, or their export failed.
	Dropped uint64 `json:"dropped"`
}

// Stats returns t's counters.
func (t *Tracer) Stats() Stats {
	return Stats{Exported: t.queue.exported.Load(), Dropped: t.queue.dropped.Load()}
}

// Flush exports what is queued (within ctx).
func (t *Tracer) Flush(ctx context.Context) error { return t.provider.ForceFlush(ctx) }

// Counts are the spans exported and dropped so far (Stats' counters).
func (t *Tracer) Counts() (exported, dropped uint64) {
	st := t.Stats()
	return st.Exported, st.Dropped
}

// Close waits until the requests t traces (held, or with a server span
// started) have ended their server spans, exports what is queued and stops
// t, all within ctx (then the spans not ended yet are lost).
func (t *Tracer) Close(ctx context.Context) error {
	t.closing.Store(true)
	t.drain()
	select {
	case <-t.idle:
	case <-ctx.Done():
		// The requests still traced lose their spans; no new one is held.
		t.inFlight.Add(drained)
	}
	err := t.provider.Shutdown(ctx)
	// The provider does not shut its span processor down when ctx is
	// already done: the queue is stopped anyway (its last export is bounded
	// by the export timeout), so that its goroutine always ends.
	t.queue.stopOnce.Do(func() { close(t.queue.stop) })
	return errors.Join(err, t.closeConn())
}

// ended counts a server span's end, and tells a closing t when it was the
// last one.
func (t *Tracer) ended() {
	if t.inFlight.Add(-1) == 0 && t.closing.Load() {
		t.drain()
	}
}

// drain marks a closing t drained when nothing is in flight: only one
// caller succeeds, and it closes idle.
func (t *Tracer) drain() {
	if t.inFlight.CompareAndSwap(0, drained) {
		close(t.idle)
	}
}

// Hold counts a request that is to start its server span on t
// (ServerStart.Held), so that a Close begun in between waits for it; false
// when t is closed already, or closing with nothing left in flight: then
// its spans would be lost, and the caller takes the configuration that
// replaced t's. A caller that reads t's configuration, holds t, and starts
// the server span has its spans exported whenever t is retired.
func (t *Tracer) Hold() bool { return t.inFlight.Add(1) > 0 }

// Server is the server span of one request, and the writer that records its
// response status. Nil-safe: a nil *Server does nothing.
type Server struct {
	httpfilter.ResponseWriter
	t      *Tracer
	span   trace.Span
	method string
	status int
}

// BeforeResponse records the response status (httpfilter.ResponseHook).
func (s *Server) BeforeResponse(status int, _ http.Header) { s.status = status }

// StartServer starts the server span of r: a child of the trace context r
// carries (W3C traceparent, else B3), or a new trace. It returns r with the
// span in its context and the writer to answer through.
func (t *Tracer) StartServer(w http.ResponseWriter, r *http.Request) (*Server, *http.Request) {
	return t.StartServerWith(w, r, ServerStart{Path: r.URL.Path})
}

// ServerStart is what StartServerWith needs beyond the request.
type ServerStart struct {
	// Path is the path received (url.path), before normalization.
	Path string
	// Ratio, when Override, is the probability that the request, if it
	// starts a trace, is sampled (the route's: Settings.RouteRatio), in
	// place of Settings.Ratio.
	Ratio    float64
	Override bool
	// Held tells that the request holds t already (Hold): the server span
	// takes that count over.
	Held bool
}

// StartServerWith is StartServer with the path received and the route's
// sampling.
func (t *Tracer) StartServerWith(w http.ResponseWriter, r *http.Request, start ServerStart) (*Server, *http.Request) {
	carrier := propagation.HeaderCarrier(r.Header)
	ctx := t.traceContext.Extract(r.Context(), carrier)
	if !trace.SpanContextFromContext(ctx).IsValid() {
		ctx = t.b3.Extract(ctx, carrier)
	}
	if start.Override {
		ctx = context.WithValue(ctx, routeRatioKey{}, start.Ratio)
	}
	// The sampler looks at no attribute: they are built for sampled
	// (recording) spans only.
	ctx, span := t.tracer.Start(ctx, r.Method, trace.WithSpanKind(trace.SpanKindServer))
	if span.IsRecording() {
		attrs := make([]attribute.KeyValue, 0, len(t.tags)+8)
		attrs = append(attrs, t.tags...)
		attrs = append(attrs,
			attribute.String("http.request.method", r.Method),
			attribute.String("url.path", start.Path),
			attribute.String("server.address", r.Host),
		)
		if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
			attrs = append(attrs, attribute.String("network.peer.address", host))
		}
		if ua := r.Header.Get("User-Agent"); ua != "" {
			attrs = append(attrs, attribute.String("user_agent.original", ua))
		}
		if id := peer.Identity(r.Context()); id != "" {
			attrs = append(attrs, attribute.String("meshgate.peer.spiffe_id", id))
		}
		span.SetAttributes(attrs...)
	}
	if !start.Held {
		t.inFlight.Add(1)
	}
	s := &Server{t: t, span: span, method: r.Method}
	s.ResponseWriter.Reset(w, s)
	return s, r.WithContext(ctx)
}

// SetRoute records the route that matched: http.route and meshgate.route
// are its name, or, for a route without one, its virtual host's name;
// meshgate.virtual_host is the virtual host's.
func (s *Server) SetRoute(name, virtualHost string) {
	if s == nil || !s.span.IsRecording() {
		return
	}
	route := name
	if route == "" {
		route = virtualHost
	}
	if route == "" {
		return
	}
	s.span.SetName(s.method + " " + route)
	s.span.SetAttributes(attribute.String("http.route", route), attribute.String("meshgate.route", route),
		attribute.String("meshgate.virtual_host", virtualHost))
}

// End ends the span with the response status recorded.
func (s *Server) End() {
	if s == nil {
		return
	}
	endWithStatus(s.span, s.status, nil)
	s.t.ended()
}

// Denied records, on the request's server span when it is traced, the
// authorization rule that denied it (meshgate.denied_by). Without tracing
// it does nothing.
func Denied(ctx context.Context, rule string) {
	if span := trace.SpanFromContext(ctx); span.IsRecording() {
		span.SetAttributes(attribute.String("meshgate.denied_by", rule))
	}
}

// Authenticated records, on the request's server span when it is traced,
// the request's authenticated principal (enduser.id, the OpenTelemetry
// attribute). Without tracing it does nothing.
func Authenticated(ctx context.Context, principal string) {
	if span := trace.SpanFromContext(ctx); principal != "" && span.IsRecording() {
		span.SetAttributes(attribute.String("enduser.id", principal))
	}
}

// Client is the client span of one upstream attempt. Nil-safe: a nil
// *Client does nothing.
type Client struct {
	span   trace.Span
	status int
	err    error
}

// StartClient starts the client span of an attempt to send out to endpoint
// of cluster, as a child of the span in ctx, and injects its trace context
// (W3C traceparent and tracestate) into out's headers.
func (t *Tracer) StartClient(ctx context.Context, out *http.Request, cluster, endpoint string) *Client {
	ctx, span := t.tracer.Start(ctx, out.Method, trace.WithSpanKind(trace.SpanKindClient))
	if span.IsRecording() {
		span.SetName(out.Method + " " + cluster)
		attrs := make([]attribute.KeyValue, 0, len(t.tags)+5)
		attrs = append(attrs, t.tags...)
		attrs = append(attrs,
			attribute.String("http.request.method", out.Method),
			attribute.String("url.path", out.URL.Path),
			attribute.String("server.address", endpoint),
			attribute.String("meshgate.destination", cluster),
			attribute.String("meshgate.upstream.endpoint", endpoint),
		)
		span.SetAttributes(attrs...)
	}
	t.traceContext.Inject(ctx, propagation.HeaderCarrier(out.Header))
	return &Client{span: span}
}

// SetStatus records the upstream's response status.
func (c *Client) SetStatus(status int) {
	if c != nil {
		c.status = status
	}
}

// Fail records why the attempt failed.
func (c *Client) Fail(err error) {
	if c != nil {
		c.err = err
	}
}

// End ends the attempt's span with what was recorded.
func (c *Client) End() {
	if c == nil {
		return
	}
	endWithStatus(c.span, c.status, c.err)
}

func endWithStatus(span trace.Span, status int, err error) {
	if span.IsRecording() {
		if status != 0 {
			span.SetAttributes(attribute.Int("http.response.status_code", status))
		}
		switch {
		case err != nil:
			span.SetStatus(codes.Error, err.Error())
		case status >= 500:
			span.SetStatus(codes.Error, http.StatusText(status))
		}
	}
	span.End()
}

// queue is the span processor: a bounded queue, exported in batches by one
// goroutine. A full queue drops the span (counted); a failed export drops
// its batch (counted). Requests never wait for it.
type queue struct {
	exporter  sdktrace.SpanExporter
	spans     chan sdktrace.ReadOnlySpan
	batchSize int
	interval  time.Duration
	timeout   time.Duration
	logger    *slog.Logger

	exported, dropped atomic.Uint64

	flush    chan chan struct{}
	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

func newQueue(exporter sdktrace.SpanExporter, opts Options, timeout time.Duration, logger *slog.Logger) *queue {
	q := &queue{
		exporter:  exporter,
		spans:     make(chan sdktrace.ReadOnlySpan, cmpOr(opts.QueueSize, DefaultQueueSize)),
		batchSize: cmpOr(opts.BatchSize, DefaultBatchSize),
		interval:  cmpOr(opts.FlushInterval, DefaultFlushInterval),
		timeout:   timeout,
		logger:    logger,
		flush:     make(chan chan struct{}),
		stop:      make(chan struct{}),
		done:      make(chan struct{}),
	}
	go q.run()
	return q
}

func cmpOr[T int | time.Duration](v, def T) T {
	if v > 0 {
		return v
	}
	return def
}

func (q *queue) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd queues a sampled span, or drops it when the queue is full.
func (q *queue) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	select {
	case q.spans <- s:
	default:
		q.dropped.Add(1)
	}
}

func (q *queue) run() {
	defer close(q.done)
	batch := make([]sdktrace.ReadOnlySpan, 0, q.batchSize)
	ticker := time.NewTicker(q.interval)
	defer ticker.Stop()
	send := func() {
		if len(batch) == 0 {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), q.timeout)
		err := q.exporter.ExportSpans(ctx, batch)
		cancel()
		if err != nil {
			q.dropped.Add(uint64(len(batch)))
			q.logger.Debug("span export failed", "spans", len(batch), "error", err)
		} else {
			q.exported.Add(uint64(len(batch)))
		}
		clear(batch)
		batch = batch[:0]
	}
	drain := func() {
		for {
			select {
			case s := <-q.spans:
				batch = append(batch, s)
				if len(batch) == q.batchSize {
					send()
				}
			default:
				send()
				return
			}
		}
	}
	for {
		select {
		case s := <-q.spans:
			batch = append(batch, s)
			if len(batch) == q.batchSize {
				send()
			}
		case <-ticker.C:
			send()
		case ack := <-q.flush:
			drain()
			close(ack)
		case <-q.stop:
			drain()
			return
		}
	}
}

// ForceFlush exports what is queued.
func (q *queue) ForceFlush(ctx context.Context) error {
	ack := make(chan struct{})
	select {
	case q.flush <- ack:
	case <-q.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-ack:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Shutdown exports what is queued and stops the exporter.
func (q *queue) Shutdown(ctx context.Context) error {
	q.stopOnce.Do(func() { close(q.stop) })
	select {
	case <-q.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return q.exporter.Shutdown(ctx)
}

// routeRatioKey keys, in the context a server span starts with, the
// sampling ratio of the request's route (ServerStart.Ratio).
type routeRatioKey struct{}

// routeSampler samples a new trace at the ratio of the request's route
// when it has one (routeRatioKey), else as def.
type routeSampler struct{ def sdktrace.Sampler }

func (s routeSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	if ratio, ok := p.ParentContext.Value(routeRatioKey{}).(float64); ok {
		return sdktrace.TraceIDRatioBased(ratio).ShouldSample(p)
	}
	return s.def.ShouldSample(p)
}

func (s routeSampler) Description() string { return "RouteOr{" + s.def.Description() + "}" }

// RouteRatio is the sampling ratio of the requests of a route whose
// Route.tracing sets random (hasRandom) or overall (hasOverall) sampling:
// each replaces the connection manager's, as in Envoy.
func (s *Settings) RouteRatio(random, overall float64, hasRandom, hasOverall bool) float64 {
	if !hasRandom {
		random = s.Random
	}
	if !hasOverall {
		overall = s.Overall
	}
	return random * overall
}
