package translate

import (
	"fmt"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/api/logformat"
	"github.com/meshgate/meshgate/controlplane/model"
)

// Access logs on the wire (docs/observability.md, "Access logs").
const (
	// FileAccessLoggerName is the access logger of every listener's
	// HttpConnectionManager when the mesh logs.
	FileAccessLoggerName = "envoy.access_loggers.file"
	// Static fields of every line: the proxy's role (gateway or sidecar,
	// the TracingRole* values) and name (namespace/gateway or
	// namespace/service).
	AccessLogFieldRole  = "role"
	AccessLogFieldProxy = "proxy"
)

// defaultAccessLogFields are the fields of a line when the MeshConfig
// gives none: Envoy command operators, by JSON field name.
var defaultAccessLogFields = map[string]string{
	"start_time":            "%START_TIME%",
	"trace_id":              "%TRACE_ID%",
	"route":                 "%ROUTE_NAME%",
	"upstream_host":         "%UPSTREAM_HOST%",
	"upstream_cluster":      "%UPSTREAM_CLUSTER%",
	"method":                "%REQ(:METHOD)%",
	"authority":             "%REQ(:AUTHORITY)%",
	"path":                  "%REQ(:PATH)%",
	"protocol":              "%PROTOCOL%",
	"response_code":         "%RESPONSE_CODE%",
	"response_flags":        "%RESPONSE_FLAGS%",
	"response_code_details": "%RESPONSE_CODE_DETAILS%",
	"denied_by":             "%DYNAMIC_METADATA(" + logformat.RBACMetadataNamespace + ":" + logformat.RBACPolicyKey + ")%",
	"bytes_received":        "%BYTES_RECEIVED%",
	"bytes_sent":            "%BYTES_SENT%",
	"duration":              "%DURATION%",
	"upstream_duration":     "%RESPONSE_DURATION%",
	"peer":                  "%DOWNSTREAM_PEER_URI_SAN%",
	"principal":             "%DYNAMIC_METADATA(" + logformat.AuthnMetadataNamespace + ":" + logformat.PrincipalKey + ")%",
	"downstream_address":    "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%",
}

// logListener sets, when the mesh logs (m.Mesh.AccessLog not nil), the
// access_log of l's HttpConnectionManager: the file access logger writing
// one JSON line per request to the mesh's path, with the default fields
// (or the mesh's) and the proxy's role and name. Without it l is left as it
// is.
func logListener(l *listenerv3.Listener, m *model.Model, name, namespace, role string) error {
	a := m.Mesh.AccessLog
	if a == nil {
		return nil
	}
	entry, err := hcmAccessLog(a, namespace+"/"+name, role)
	if err != nil {
		return fmt.Errorf("listener %q: access log: %w", l.GetName(), err)
	}
	for _, chain := range l.GetFilterChains() {
		for _, f := range chain.GetFilters() {
			if f.GetName() != httpConnectionManagerName {
				continue
			}
			hcm := &hcmv3.HttpConnectionManager{}
			if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
				return fmt.Errorf("listener %q: connection manager: %w", l.GetName(), err)
			}
			hcm.AccessLog = []*accesslogv3.AccessLog{entry}
			cfg, err := anypb.New(hcm)
			if err != nil {
				return fmt.Errorf("listener %q: connection manager: %w", l.GetName(), err)
			}
			f.ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: cfg}
		}
	}
	return nil
}

// hcmAccessLog is the HttpConnectionManager.access_log entry of the mesh's
// access log a for the proxy named proxy of role.
func hcmAccessLog(a *model.AccessLog, proxy, role string) (*accesslogv3.AccessLog, error) {
	fields := a.Fields
	if fields == nil {
		fields = defaultAccessLogFields
	}
	values := make(map[string]*structpb.Value, len(fields)+2)
	values[AccessLogFieldRole] = structpb.NewStringValue(role)
	values[AccessLogFieldProxy] = structpb.NewStringValue(proxy)
	for k, v := range fields {
		if _, err := logformat.Parse(v); err != nil {
			return nil, fmt.Errorf("field %q: %w", k, err) // checked by policy
		}
		values[k] = structpb.NewStringValue(v)
	}
	file := &filev3.FileAccessLog{
		Path: a.Path,
		AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: &corev3.SubstitutionFormatString{
			Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: &structpb.Struct{Fields: values}},
		}},
	}
	// Deterministic: the Struct is a map, and equal configurations must
	// marshal to equal bytes (versions, the memo, the goldens).
	cfg := &anypb.Any{}
	if err := anypb.MarshalFrom(cfg, file, proto.MarshalOptions{Deterministic: true}); err != nil {
		return nil, err
	}
	return &accesslogv3.AccessLog{
		Name:       FileAccessLoggerName,
		ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg},
	}, nil
}
