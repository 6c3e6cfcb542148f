// Package accesslog is the access log of a proxy listener, as an
// HttpConnectionManager's access_log configures it (docs/observability.md,
// "Access logs"): the envoy.access_loggers.file logger, one JSON line per
// request whose fields are Envoy command operators (api/logformat), written
// to a file or the proxy's standard output.
//
// A request's Entry records what the pipeline learns (route, upstream,
// response flags, the rule that denied it) and is formatted when the
// request ends. Lines are written off the request path: a bounded queue
// per file and one writer goroutine; when the file or stdout is slow, lines
// are dropped and counted, and requests never wait. A listener without
// access_log has no Entry and pays nothing.
package accesslog

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/api/logformat"
)

// LoggerName is the only access logger implemented.
const LoggerName = "envoy.access_loggers.file"

// Settings is one checked HttpConnectionManager.access_log entry.
type Settings struct {
	// Path is FileAccessLog.path: /dev/stdout, /dev/stderr or a file.
	Path string
	// fields are the json_format's, sorted by name.
	fields []field
}

// field is one JSON field of a line.
type field struct {
	name string // JSON-encoded, with its quotes
	// literal is the JSON of a number or bool value; "" for a format.
	literal string
	parts   []logformat.Part
}

// Parse reads an HttpConnectionManager's access_log, already checked
// against the subset (dataplane/xdscheck); none gives nil. Errors name the
// field.
func Parse(logs []*accesslogv3.AccessLog) ([]*Settings, error) {
	var out []*Settings
	for i, l := range logs {
		s, err := parseOne(l)
		if err != nil {
			return nil, fmt.Errorf("access_log[%d].%w", i, err)
		}
		out = append(out, s)
	}
	return out, nil
}

func parseOne(l *accesslogv3.AccessLog) (*Settings, error) {
	if n := l.GetName(); n != LoggerName && n != "" {
		return nil, fmt.Errorf("name: %q not supported (want %s)", n, LoggerName)
	}
	cfg := &filev3.FileAccessLog{}
	if err := l.GetTypedConfig().UnmarshalTo(cfg); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	if cfg.GetPath() == "" {
		return nil, errors.New("typed_config.path: required")
	}
	st := cfg.GetLogFormat().GetJsonFormat()
	if st == nil {
		return nil, errors.New("typed_config.log_format.json_format: required")
	}
	s := &Settings{Path: cfg.GetPath()}
	for _, name := range slices.Sorted(maps.Keys(st.GetFields())) {
		f := field{name: strconv.Quote(name)}
		switch v := st.GetFields()[name].GetKind().(type) {
		case *structpb.Value_StringValue:
			parts, err := logformat.Parse(v.StringValue)
			if err != nil {
				return nil, fmt.Errorf("typed_config.log_format.json_format.fields[%s]: %w", name, err)
			}
			f.parts = parts
		case *structpb.Value_NumberValue:
			if math.IsNaN(v.NumberValue) || math.IsInf(v.NumberValue, 0) {
				return nil, fmt.Errorf("typed_config.log_format.json_format.fields[%s]: %v is not a JSON number", name, v.NumberValue)
			}
			f.literal = strconv.FormatFloat(v.NumberValue, 'g', -1, 64)
		case *structpb.Value_BoolValue:
			f.literal = strconv.FormatBool(v.BoolValue)
		default:
			return nil, fmt.Errorf("typed_config.log_format.json_format.fields[%s]: want a string, a number or a bool", name)
		}
		s.fields = append(s.fields, f)
	}
	return s, nil
}
