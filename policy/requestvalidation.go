package policy

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"

	"github.com/meshgate/meshgate/internal/openapidoc"
)

// Limits of a TrafficPolicy's requestValidation.
const (
	// MaxOpenAPIDocumentBytes bounds an OpenAPI document (1 MiB): it is
	// delivered inline in the proxies' route configuration.
	MaxOpenAPIDocumentBytes = 1 << 20
	// MaxValidationBodyBytes bounds requestValidation.maxBodyBytes (16
	// MiB): the proxy holds the body in memory while it validates it.
	MaxValidationBodyBytes = 16 << 20
	// DefaultValidationBodyBytes is maxBodyBytes when unset (1 MiB).
	DefaultValidationBodyBytes = 1 << 20
)

// Response validation modes.
const (
	// ResponseValidationOff: responses are not validated (the default).
	ResponseValidationOff = "Off"
	// ResponseValidationReportOnly: a response that does not match the
	// document is logged and counted at the proxy, and sent unchanged.
	ResponseValidationReportOnly = "ReportOnly"
)

// RequestValidation is the requestValidation section of a TrafficPolicy
// (HTTPRoute targets only, optionally a rule by sectionName): the requests
// of the route are validated against an OpenAPI 3 document at the proxy,
// and one that does not match (path, method, path/query/header
// parameters, JSON body schema) gets 400 with an RFC 9457 problem+json
// body naming the field.
type RequestValidation struct {
	// OpenAPI is the document: a file or inline (exactly one).
	OpenAPI OpenAPISource `json:"openAPI"`
	// MaxBodyBytes bounds the request bodies read for validation (and
	// the response bodies, ReportOnly); a longer request body gets 413.
	// Default DefaultValidationBodyBytes, at most MaxValidationBodyBytes.
	MaxBodyBytes *int64 `json:"maxBodyBytes,omitempty"`
	// ResponseValidation is Off (the default) or ReportOnly.
	ResponseValidation string `json:"responseValidation,omitempty"`
}

// OpenAPISource is where an OpenAPI 3 document is: File, a path (relative
// to the directory of the policy file; watched: a change is a reload), or
// Inline, the document itself (YAML or JSON text).
type OpenAPISource struct {
	File   string `json:"file,omitempty"`
	Inline string `json:"inline,omitempty"`
}

// openAPIPath is the path of an OpenAPI file: as written when absolute,
// else relative to the policy file's directory.
func openAPIPath(policyFile, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(filepath.Dir(policyFile), name)
}

// OpenAPIDocument is the OpenAPI document of a TrafficPolicy of the set
// (JSON or YAML, validated when the set was loaded): the inline one, or
// the file's contents as read then (a last good version keeps the
// document it was accepted with); nil when it has none.
func (s *Set) OpenAPIDocument(tp *TrafficPolicy) []byte {
	rv := tp.Spec.RequestValidation
	switch {
	case rv == nil:
		return nil
	case rv.OpenAPI.Inline != "":
		return []byte(rv.OpenAPI.Inline)
	case rv.OpenAPI.File != "":
		return s.OpenAPIDocuments[openAPIPath(tp.Source.File, rv.OpenAPI.File)]
	}
	return nil
}

// openAPIReads memoizes the OpenAPI documents of one evaluation, by file
// path (or inline text): each is read and validated once, whatever the
// number of passes.
type openAPIReads struct {
	files  map[string]openAPIRead
	inline map[string]error
}

type openAPIRead struct {
	data []byte
	err  error
}

// file reads and validates the document at path.
func (r *openAPIReads) file(path string) ([]byte, error) {
	if got, ok := r.files[path]; ok {
		return got.data, got.err
	}
	data, err := readOpenAPIFile(path)
	if err == nil {
		err = checkOpenAPI(data)
		if err != nil {
			err = fmt.Errorf("%s: %w", path, err)
		}
	}
	if r.files == nil {
		r.files = map[string]openAPIRead{}
	}
	r.files[path] = openAPIRead{data, err}
	return data, err
}

// text validates an inline document.
func (r *openAPIReads) text(doc string) error {
	if err, ok := r.inline[doc]; ok {
		return err
	}
	err := checkOpenAPI([]byte(doc))
	if r.inline == nil {
		r.inline = map[string]error{}
	}
	r.inline[doc] = err
	return err
}

// checkOpenAPI validates a document: its size, then kin-openapi's load
// and validation.
func checkOpenAPI(data []byte) error {
	if len(data) > MaxOpenAPIDocumentBytes {
		return fmt.Errorf("the document is larger than %d bytes", MaxOpenAPIDocumentBytes)
	}
	_, err := openapidoc.Load(context.Background(), data)
	return err
}

// OpenAPIFiles are the OpenAPI documents the TrafficPolicies of the set
// name by file, sorted: a control plane watches them, and reloads the
// policy when they change.
func (s *Set) OpenAPIFiles() []string {
	var out []string
	for _, tp := range s.TrafficPolicies {
		if rv := tp.Spec.RequestValidation; rv != nil && rv.OpenAPI.File != "" {
			out = append(out, openAPIPath(tp.Source.File, rv.OpenAPI.File))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// WatchedFiles are the files the set names that a control plane watches
// besides the policy files: CertificateFiles, OpenAPIFiles and
// APIKeyConsumersFiles, sorted.
func (s *Set) WatchedFiles() []string {
	out := slices.Concat(s.CertificateFiles(), s.OpenAPIFiles(), s.APIKeyConsumersFiles())
	slices.Sort(out)
	return slices.Compact(out)
}

// checkRequestValidation checks a requestValidation section and its
// document: a file is read and validated once per evaluation, and
// recorded in the set (Set.OpenAPIDocuments); a last good version of the
// policy keeps the document it was accepted with. targetKinds are the
// kinds of the policy's targets.
func (l *loader) checkRequestValidation(tp *TrafficPolicy, targetKinds []string) {
	const field = "spec.requestValidation"
	src, rv := tp.Source, tp.Spec.RequestValidation
	for i, kind := range targetKinds {
		if kind != "" && kind != KindHTTPRoute {
			l.errorf(src, field, "requestValidation applies to HTTPRoute targets only (spec.targetRefs[%d] is a %s)", i, kind)
			return
		}
	}
	if v := rv.MaxBodyBytes; v != nil && (*v < 1 || *v > MaxValidationBodyBytes) {
		l.errorf(src, field+".maxBodyBytes", "%d bytes: want 1 to %d", *v, MaxValidationBodyBytes)
	}
	switch rv.ResponseValidation {
	case "", ResponseValidationOff, ResponseValidationReportOnly:
	default:
		l.errorf(src, field+".responseValidation", "%q: want %s or %s", rv.ResponseValidation, ResponseValidationOff, ResponseValidationReportOnly)
	}
	if l.openAPI == nil {
		l.openAPI = &openAPIReads{}
	}
	switch o := rv.OpenAPI; {
	case (o.File == "") == (o.Inline == ""):
		l.errorf(src, field+".openAPI", "exactly one of file and inline is required")
	case o.Inline != "":
		if err := l.openAPI.text(o.Inline); err != nil {
			l.errorf(src, field+".openAPI.inline", "%v", err)
		}
	default:
		path := openAPIPath(src.File, o.File)
		if data, ok := l.lastGoodOpenAPI[path]; ok && l.lastGoodTraffic[tp] {
			l.addOpenAPIDocument(path, data)
			return
		}
		data, err := l.openAPI.file(path)
		if err != nil {
			l.errorf(src, field+".openAPI.file", "%v", err)
			return
		}
		l.addOpenAPIDocument(path, data)
	}
}

// addOpenAPIDocument records the document read at path in the set.
func (l *loader) addOpenAPIDocument(path string, data []byte) {
	if l.set.OpenAPIDocuments == nil {
		l.set.OpenAPIDocuments = map[string][]byte{}
	}
	l.set.OpenAPIDocuments[path] = data
}

// readOpenAPIFile reads an OpenAPI document file, at most
// MaxOpenAPIDocumentBytes (one byte more tells it is larger).
func readOpenAPIFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, MaxOpenAPIDocumentBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	return data, nil
}
