// Package openapi is meshgate's request validation HTTP filter for the
// meshgate proxy (docs/xds.md "Request validation"): a route's config
// carries an OpenAPI 3 document, inline, and a request that does not
// match it (its path, its method, its path, query and header parameters,
// its JSON body against the operation's schema) gets 400 with an RFC 9457
// problem+json body naming the field: "/body/items/0/qty" for a body
// value (a JSON pointer below /body), "query.limit" for a parameter
// (where it is, then its name), "method" or "path". A body longer than the
// route's max_body_bytes gets 413, the same way. Optionally the responses
// are validated too, report-only: a mismatch is logged and counted
// (openapi_response_mismatch in /stats), never changed.
//
// Envoy has no OpenAPI filter: its config is an xds.type.v3.TypedStruct of
// type_url TypeURL, listener-level in the http_filters entry ({}: nothing
// to validate) and per route in an envoy.config.route.v3.FilterConfig,
// both optional (is_optional), so that an Envoy given the same xDS skips
// the filter. The document is parsed, validated and compiled into a router
// (github.com/getkin/kin-openapi, routers/gorillamux) once per config,
// when the route configuration arrives; a request of a route without a
// document pays one lookup of its per-route config.
package openapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/gorillamux"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/accesslog"
	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/internal/openapidoc"
)

// Counter families of the filter in the proxy's /stats, keyed by route
// (its name, else its virtual host's).
const (
	// StatRequestInvalid counts the requests refused (400 or 413).
	StatRequestInvalid = "openapi_request_invalid"
	// StatResponseMismatch counts the responses that do not match the
	// document (report-only: they are sent as they are).
	StatResponseMismatch = "openapi_response_mismatch"
)

// Response code details of a refused request (the access log's).
const (
	DetailsInvalid  = "openapi_request_invalid"
	DetailsTooLarge = "openapi_request_body_too_large"
)

// ProblemType is the RFC 9457 type of the problem bodies.
const ProblemType = "https://meshgate.dev/problems/request-validation"

// Factory describes the request validation filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		TypeURL:     TypeURL,
		CheckValue:  checkValue,
		Stats:       []string{StatRequestInvalid, StatResponseMismatch},
		New:         newFilter,
		NewPerRoute: newPerRoute,
	}
}

// validator is a compiled config: nil document, nothing to validate.
type validator struct {
	router routers.Router
	// options are the request validation options: the document's
	// security requirements are not this filter's (SecurityPolicy
	// authenticates); responseOptions the response's: a status the
	// document does not list is a mismatch too.
	options, responseOptions *openapi3filter.Options
	maxBodyBytes             int64
	reportResponses          bool
}

// compile parses and compiles a config value; nil when it has no document.
func compile(config proto.Message) (*validator, error) {
	v, ok := config.(*structpb.Struct)
	if !ok {
		return nil, fmt.Errorf("want a Struct, got %T", config)
	}
	s, err := parseValue(v)
	if err != nil {
		return nil, err
	}
	if s.document == "" {
		return nil, nil
	}
	doc, err := openapidoc.Load(context.Background(), []byte(s.document))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", documentField, err)
	}
	rt, err := gorillamux.NewRouter(doc)
	if err != nil {
		return nil, fmt.Errorf("%s: routes: %w", documentField, err)
	}
	return &validator{router: rt, maxBodyBytes: s.maxBodyBytes, reportResponses: s.reportResponses,
		options: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc},
		responseOptions: &openapi3filter.Options{AuthenticationFunc: openapi3filter.NoopAuthenticationFunc,
			IncludeResponseStatus: true},
	}, nil
}

// filter is one request validation http_filters entry.
type filter struct {
	name     string // the entry's name: the key of its per-route configs
	own      *validator
	invalid  *httpfilter.Counters
	mismatch *httpfilter.Counters
	logger   *slog.Logger
}

func newFilter(name string, config proto.Message, env httpfilter.Env) (httpfilter.Filter, error) {
	own, err := compile(config)
	if err != nil {
		return nil, err
	}
	logger := env.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &filter{name: name, own: own, logger: logger,
		invalid:  env.Stats.Counters(StatRequestInvalid),
		mismatch: env.Stats.Counters(StatResponseMismatch)}, nil
}

func newPerRoute(config proto.Message) (any, error) {
	v, err := compile(config)
	if err != nil {
		return nil, err
	}
	if v == nil {
		return &validator{}, nil
	}
	return v, nil
}

// Wrap returns the handler validating the requests of next.
func (f *filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return &handler{filter: f, next: next}
}

type handler struct {
	*filter
	next httpfilter.Handler
}

// ServeHTTP validates the request when its route has a document.
func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request, rt *router.Route) {
	v := h.own
	if rt != nil {
		if own, ok := rt.PerFilterConfig(h.name).(*validator); ok {
			v = own
		}
	}
	if v == nil || v.router == nil {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	input, p := v.validateRequest(r)
	if p != nil {
		h.invalid.Inc(routeKey(rt))
		accesslog.FromContext(r.Context()).SetDetails(p.details)
		writeProblem(w, rt, p)
		return
	}
	if !v.reportResponses {
		h.next.ServeHTTP(w, r, rt)
		return
	}
	rec := &recorder{w: w, max: v.maxBodyBytes}
	h.next.ServeHTTP(rec, r, rt)
	if rec.status == 0 || rec.over {
		return
	}
	err := openapi3filter.ValidateResponse(r.Context(), (&openapi3filter.ResponseValidationInput{
		RequestValidationInput: input, Status: rec.status, Header: w.Header(), Options: v.responseOptions,
	}).SetBodyBytes(rec.body.Bytes()))
	if err != nil {
		h.mismatch.Inc(routeKey(rt))
		h.logger.Warn("response does not match the OpenAPI document (report-only)",
			"route", routeKey(rt), "method", r.Method, "path", r.URL.Path, "status", rec.status,
			"field", responseField(err), "reason", reason(err))
	}
}

// routeKey is a route's counter key: its name, else its virtual host's.
func routeKey(rt *router.Route) string {
	if rt == nil {
		return ""
	}
	if n := rt.Name(); n != "" {
		return n
	}
	return rt.VirtualHost()
}

// problem is a refused request's RFC 9457 body, and its details.
type problem struct {
	Type   string `json:"type"`
	Title  string `json:"title"`
	Status int    `json:"status"`
	Detail string `json:"detail"`
	// Field names what does not match: "/body/items/0/qty", "query.limit",
	// "header.X-Request-Id", "path.id", "method", "path", "body".
	Field   string `json:"field"`
	details string
}

// validateRequest validates r against the document, reading its body (at
// most maxBodyBytes) when the operation has one; r's body is replaced by
// the bytes read. It returns the validation input (for the response) or
// the problem.
func (v *validator) validateRequest(r *http.Request) (*openapi3filter.RequestValidationInput, *problem) {
	route, pathParams, err := v.router.FindRoute(r)
	if err != nil {
		switch {
		case errors.Is(err, routers.ErrMethodNotAllowed):
			return nil, invalid("method", "method "+r.Method+" is not allowed on "+r.URL.Path)
		default:
			return nil, invalid("path", "no operation of the API matches "+r.URL.Path)
		}
	}
	var body []byte
	hasBody := route.Operation.RequestBody != nil && r.Body != nil && r.Body != http.NoBody
	if hasBody {
		if r.ContentLength > v.maxBodyBytes {
			return nil, tooLarge(v.maxBodyBytes)
		}
		body, err = io.ReadAll(io.LimitReader(r.Body, v.maxBodyBytes+1))
		if err != nil {
			return nil, invalid("body", "reading the body: "+err.Error())
		}
		if int64(len(body)) > v.maxBodyBytes {
			return nil, tooLarge(v.maxBodyBytes)
		}
		r.Body = io.NopCloser(bytes.NewReader(body))
	}
	input := &openapi3filter.RequestValidationInput{Request: r, PathParams: pathParams, Route: route, Options: v.options}
	err = openapi3filter.ValidateRequest(r.Context(), input)
	if hasBody {
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
	}
	if err != nil {
		return nil, invalid(requestField(err), reason(err))
	}
	return input, nil
}

func invalid(field, detail string) *problem {
	return &problem{Type: ProblemType, Title: "Request does not match the API description",
		Status: http.StatusBadRequest, Detail: detail, Field: field, details: DetailsInvalid}
}

func tooLarge(max int64) *problem {
	return &problem{Type: ProblemType, Title: "Request body too large to validate",
		Status: http.StatusRequestEntityTooLarge, Field: "body", details: DetailsTooLarge,
		Detail: "the request body is longer than the route's limit of " + strconv.FormatInt(max, 10) + " bytes"}
}

// requestField names the part of a request an error of ValidateRequest is
// about.
func requestField(err error) string {
	var re *openapi3filter.RequestError
	if !errors.As(err, &re) {
		return "request"
	}
	switch {
	case re.Parameter != nil:
		return re.Parameter.In + "." + re.Parameter.Name
	case re.RequestBody != nil:
		return "/body" + pointer(err)
	}
	return "request"
}

// responseField names the part of a response an error of ValidateResponse
// is about.
func responseField(err error) string {
	var re *openapi3filter.ResponseError
	if errors.As(err, &re) && strings.HasPrefix(re.Reason, "response header") {
		return "header"
	}
	var se *openapi3.SchemaError
	if errors.As(err, &se) {
		return "/body" + pointer(err)
	}
	return "status"
}

// pointer is the JSON pointer of the schema error in err ("" for the
// whole value).
func pointer(err error) string {
	var se *openapi3.SchemaError
	if !errors.As(err, &se) {
		return ""
	}
	var b strings.Builder
	for _, p := range se.JSONPointer() {
		b.WriteByte('/')
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(p, "~", "~0"), "/", "~1"))
	}
	return b.String()
}

// reason is what is wrong, without the schema or the value (a client's
// value is not echoed back).
func reason(err error) string {
	var se *openapi3.SchemaError
	if errors.As(err, &se) && se.Reason != "" {
		return se.Reason
	}
	var re *openapi3filter.RequestError
	if errors.As(err, &re) {
		if re.Reason != "" {
			return re.Reason
		}
		if re.Err != nil {
			return re.Err.Error()
		}
	}
	var rse *openapi3filter.ResponseError
	if errors.As(err, &rse) && rse.Reason != "" {
		return rse.Reason
	}
	return err.Error()
}

// writeProblem answers with p as application/problem+json; the route's
// response header mutations apply, as in LocalReply.
func writeProblem(w http.ResponseWriter, rt *router.Route, p *problem) {
	body, err := json.Marshal(p)
	if err != nil {
		httpfilter.LocalReply(w, rt, p.Status, p.Detail)
		return
	}
	header := w.Header()
	header["Content-Type"] = []string{"application/problem+json"}
	header["Content-Length"] = []string{strconv.Itoa(len(body))}
	if rt != nil {
		rt.ApplyResponseHeaders(header)
	}
	w.WriteHeader(p.Status)
	_, _ = w.Write(body)
}

// recorder passes a response through, keeping its status and the first
// max bytes of its body for the report-only validation.
type recorder struct {
	w      http.ResponseWriter
	status int
	body   bytes.Buffer
	max    int64
	over   bool // the body is longer than max: not validated
}

func (rec *recorder) Header() http.Header { return rec.w.Header() }

func (rec *recorder) WriteHeader(status int) {
	if rec.status == 0 && status >= 200 {
		rec.status = status
	}
	rec.w.WriteHeader(status)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	if !rec.over {
		if int64(rec.body.Len()+len(b)) > rec.max {
			rec.over = true
			rec.body = bytes.Buffer{}
		} else {
			rec.body.Write(b)
		}
	}
	return rec.w.Write(b)
}

// Flush sends what is buffered; nothing when the wrapped writer cannot.
func (rec *recorder) Flush() {
	if f, ok := rec.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.w }
