package responselimit

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
// filter's config (docs/xds.md "Response body limits"): Envoy has no
// response size filter, so the filter is meshgate's, and its http_filters
// entry and per-route FilterConfig are optional (is_optional) for an Envoy
// to skip.
const TypeURL = "meshgate.dev/filters.http.response_limit.v1.ResponseLimit"

// maxResponseBytesField is the one field of the TypedStruct's value.
const maxResponseBytesField = "max_response_bytes"

// MaxResponseBytes bounds max_response_bytes (1 GiB), as the TrafficPolicy
// bodyLimits does.
const MaxResponseBytes = 1 << 30

// checkValue is the filter's part of the subset of docs/xds.md: the value
// is {} (no limit: listener-level, the routes' configs set theirs) or
// {max_response_bytes: N}, N a whole number from 1 to MaxResponseBytes.
func checkValue(v *structpb.Struct) []xdscheck.Violation {
	var out []xdscheck.Violation
	for _, key := range slices.Sorted(maps.Keys(v.GetFields())) {
		if key != maxResponseBytesField {
			out = append(out, xdscheck.Violation{Path: strconv.Quote(key), Reason: "not supported"})
		}
	}
	if _, err := parseValue(v); err != nil {
		out = append(out, xdscheck.Violation{Path: maxResponseBytesField, Reason: err.Error()})
	}
	return out
}

// parseValue returns the limit of a value: 0 for none.
func parseValue(v *structpb.Struct) (int64, error) {
	f, ok := v.GetFields()[maxResponseBytesField]
	if !ok {
		return 0, nil
	}
	n, isNumber := f.GetKind().(*structpb.Value_NumberValue)
	if !isNumber {
		return 0, errors.New("want a number")
	}
	x := n.NumberValue
	if x != math.Trunc(x) || x < 1 || x > MaxResponseBytes {
		return 0, fmt.Errorf("%v: want a whole number from 1 to %d", x, MaxResponseBytes)
	}
	return int64(x), nil
}
