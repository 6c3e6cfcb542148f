package xdscheck

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/api/logformat"
)

// Names of the access-log typed configs (docs/observability.md, "Access
// logs").
const (
	// FileAccessLogType is the config of the envoy.access_loggers.file
	// logger, the only access logger the proxy implements.
	FileAccessLogType protoreflect.FullName = "envoy.extensions.access_loggers.file.v3.FileAccessLog"
	// maxAccessLogFields bounds a json_format's fields.
	maxAccessLogFields = 128
)

// accessLogSubset is HttpConnectionManager.access_log: the file access
// logger, with a path and a log_format that is a flat json_format whose
// string values use only the command operators the proxy implements
// (api/logformat); no filter.
func accessLogSubset() Rules {
	return Rules{
		"envoy.config.accesslog.v3.AccessLog": Allow("name").
			With("typed_config", Field{AnyTypes: []protoreflect.FullName{FileAccessLogType}}).
			Requires("typed_config"),
		FileAccessLogType: Allow("path", "log_format").Requires("path", "log_format"),
		"envoy.config.core.v3.SubstitutionFormatString": Allow("json_format").
			Requires("json_format").
			CheckedBy(checkJSONFormat),
	}
}

// checkJSONFormat requires json_format to be flat: each value a string
// format (its command operators implemented), a number or a bool.
func checkJSONFormat(m protoreflect.Message) []Violation {
	fd := m.Descriptor().Fields().ByName("json_format")
	if fd == nil || !m.Has(fd) {
		return nil
	}
	st := m.Get(fd).Message()
	fieldsFD := st.Descriptor().Fields().ByName("fields")
	fields := st.Get(fieldsFD).Map()
	var out []Violation
	if fields.Len() > maxAccessLogFields {
		out = append(out, Violation{Path: "json_format", Reason: "more than 128 fields"})
	}
	fields.Range(func(k protoreflect.MapKey, v protoreflect.Value) bool {
		path := "json_format.fields[" + k.String() + "]"
		value := v.Message()
		kind := value.WhichOneof(value.Descriptor().Oneofs().ByName("kind"))
		if kind == nil {
			out = append(out, Violation{Path: path, Reason: "a value is required"})
			return true
		}
		switch kind.Name() {
		case "string_value":
			if _, err := logformat.Parse(value.Get(kind).String()); err != nil {
				out = append(out, Violation{Path: path, Reason: err.Error()})
			}
		case "number_value", "bool_value":
		default:
			out = append(out, Violation{Path: path, Reason: strings.TrimSuffix(string(kind.Name()), "_value") +
				" values are not supported (want a string format, a number or a bool)"})
		}
		return true
	})
	return out
}
