package openapi

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"

	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// TypeURL is the type_url of the xds.type.v3.TypedStruct carrying the
// filter's config (docs/xds.md "Request validation"): Envoy has no OpenAPI
// filter, so the filter is meshgate's, and its http_filters entry and
// per-route FilterConfig are optional (is_optional) for an Envoy to skip.
const TypeURL = "meshgate.dev/filters.http.openapi.v1.OpenAPIValidation"

// The fields of the TypedStruct's value.
const (
	// documentField is the OpenAPI 3 document, JSON or YAML, inline.
	documentField = "document"
	// maxBodyBytesField bounds the request (and, reported, response)
	// bodies read for validation.
	maxBodyBytesField = "max_body_bytes"
	// reportResponsesField: validate responses too, report-only.
	reportResponsesField = "report_responses"
)

// Bounds of the config.
const (
	// MaxDocumentBytes bounds the inline document (1 MiB).
	MaxDocumentBytes = 1 << 20
	// MaxBodyBytes bounds max_body_bytes (16 MiB): the body is held in
	// memory while it is validated.
	MaxBodyBytes = 16 << 20
	// DefaultMaxBodyBytes is max_body_bytes when unset (1 MiB).
	DefaultMaxBodyBytes = 1 << 20
)

// settings is a config value, parsed (not compiled).
type settings struct {
	document        string // "": no validation (the listener-level value)
	maxBodyBytes    int64
	reportResponses bool
}

// checkValue is the filter's part of the subset of docs/xds.md: the value
// is {} (listener-level: no validation; the routes' configs set theirs)
// or {document: "...", max_body_bytes: N, report_responses: bool}.
func checkValue(v *structpb.Struct) []xdscheck.Violation {
	var out []xdscheck.Violation
	for _, key := range slices.Sorted(maps.Keys(v.GetFields())) {
		switch key {
		case documentField, maxBodyBytesField, reportResponsesField:
		default:
			out = append(out, xdscheck.Violation{Path: strconv.Quote(key), Reason: "not supported"})
		}
	}
	if _, err := parseValue(v); err != nil {
		out = append(out, xdscheck.Violation{Path: "value", Reason: err.Error()})
	}
	return out
}

// parseValue reads a value's settings.
func parseValue(v *structpb.Struct) (settings, error) {
	s := settings{maxBodyBytes: DefaultMaxBodyBytes}
	fields := v.GetFields()
	if f, ok := fields[documentField]; ok {
		str, isString := f.GetKind().(*structpb.Value_StringValue)
		switch {
		case !isString:
			return s, fmt.Errorf("%s: want a string", documentField)
		case len(str.StringValue) == 0:
			return s, fmt.Errorf("%s: empty", documentField)
		case len(str.StringValue) > MaxDocumentBytes:
			return s, fmt.Errorf("%s: %d bytes, at most %d", documentField, len(str.StringValue), MaxDocumentBytes)
		}
		s.document = str.StringValue
	}
	if f, ok := fields[maxBodyBytesField]; ok {
		n, isNumber := f.GetKind().(*structpb.Value_NumberValue)
		if !isNumber {
			return s, fmt.Errorf("%s: want a number", maxBodyBytesField)
		}
		x := n.NumberValue
		if x != math.Trunc(x) || x < 1 || x > MaxBodyBytes {
			return s, fmt.Errorf("%s: %v: want a whole number from 1 to %d", maxBodyBytesField, x, MaxBodyBytes)
		}
		s.maxBodyBytes = int64(x)
	}
	if f, ok := fields[reportResponsesField]; ok {
		b, isBool := f.GetKind().(*structpb.Value_BoolValue)
		if !isBool {
			return s, fmt.Errorf("%s: want a bool", reportResponsesField)
		}
		s.reportResponses = b.BoolValue
	}
	if s.document == "" && (fields[maxBodyBytesField] != nil || s.reportResponses) {
		return s, errors.New(maxBodyBytesField + " and " + reportResponsesField + " need a " + documentField)
	}
	return s, nil
}
