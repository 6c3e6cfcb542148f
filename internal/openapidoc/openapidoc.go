// Package openapidoc loads OpenAPI 3 documents for request validation, the
// same way for the control plane (which checks a policy's document when it
// loads it) and the proxy (which compiles the document it is given): with
// github.com/getkin/kin-openapi, external references refused (a document
// is self-contained: the proxy reads no file and fetches no URL), the
// document validated, and its servers reduced to their paths.
package openapidoc

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"regexp"

	"github.com/getkin/kin-openapi/openapi3"
)

// schemeAndHost is the scheme and host part of a server URL.
var schemeAndHost = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]*://[^/]*`)

// Load parses an OpenAPI 3 document (JSON or YAML) and validates it. The
// servers of the document and of its paths are reduced to their paths
// ("https://api.example.com/v1" → "/v1"): the route that carries the
// document has already matched the request's host and scheme.
func Load(ctx context.Context, data []byte) (*openapi3.T, error) {
	loader := openapi3.NewLoader()
	loader.Context = ctx
	loader.IsExternalRefsAllowed = false
	loader.ReadFromURIFunc = func(*openapi3.Loader, *url.URL) ([]byte, error) {
		return nil, errors.New("external references are not supported: the document must be self-contained")
	}
	doc, err := loader.LoadFromData(data)
	if err != nil {
		return nil, fmt.Errorf("parsing the OpenAPI document: %w", err)
	}
	if doc.OpenAPI == "" {
		return nil, errors.New("not an OpenAPI 3 document: the openapi field is missing")
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("invalid OpenAPI document: %w", err)
	}
	if doc.Paths == nil || doc.Paths.Len() == 0 {
		return nil, errors.New("invalid OpenAPI document: no paths")
	}
	pathOnly(doc.Servers)
	for _, item := range doc.Paths.Map() {
		pathOnly(item.Servers)
	}
	return doc, nil
}

// pathOnly reduces each server URL to its path ("/" when it has none).
func pathOnly(servers openapi3.Servers) {
	for _, s := range servers {
		if s == nil {
			continue
		}
		p := schemeAndHost.ReplaceAllString(s.URL, "")
		if p == "" {
			p = "/"
		}
		s.URL = p
	}
}
