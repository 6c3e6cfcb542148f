package xdscheck

import (
	"strings"
	"testing"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// TestAccessLogSubset: HttpConnectionManager.access_log with the file
// logger and a flat json_format of implemented command operators is
// accepted; an unknown operator (named), nested values, text formats,
// other loggers and filters are not.
func TestAccessLogSubset(t *testing.T) {
	t.Parallel()
	jsonFormat := func(fields map[string]any) *corev3.SubstitutionFormatString {
		st, err := structpb.NewStruct(fields)
		if err != nil {
			t.Fatal(err)
		}
		return &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st}}
	}
	file := func(f *corev3.SubstitutionFormatString) *filev3.FileAccessLog {
		return &filev3.FileAccessLog{Path: "/dev/stdout", AccessLogFormat: &filev3.FileAccessLog_LogFormat{LogFormat: f}}
	}
	tests := []struct {
		name   string
		config proto.Message
		mutate func(*accesslogv3.AccessLog)
		want   string // "" accepted
	}{
		{name: "default fields", config: file(jsonFormat(map[string]any{
			"status": "%RESPONSE_CODE%", "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "role": "sidecar",
			"denied_by": "%DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_effective_policy_id)%",
			"n":         1, "b": true,
		}))},
		{name: "unknown operator", config: file(jsonFormat(map[string]any{"x": "%UPSTREAM_TRANSPORT_FAILURE_REASON%"})),
			want: "json_format.fields[x]: unknown command operator %UPSTREAM_TRANSPORT_FAILURE_REASON%"},
		{name: "other metadata", config: file(jsonFormat(map[string]any{"x": "%DYNAMIC_METADATA(envoy.lb:canary)%"})),
			want: "DYNAMIC_METADATA(envoy.lb:canary) not supported"},
		{name: "nested", config: file(jsonFormat(map[string]any{"x": map[string]any{"y": "%PROTOCOL%"}})),
			want: "struct values are not supported"},
		{name: "text format", config: file(&corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_TextFormatSource{
			TextFormatSource: &corev3.DataSource{Specifier: &corev3.DataSource_InlineString{InlineString: "%PROTOCOL%\n"}}}}),
			want: "text_format_source: not supported"},
		{name: "no format", config: &filev3.FileAccessLog{Path: "/dev/stdout"}, want: "log_format"},
		{name: "omit empty values", config: func() proto.Message {
			f := jsonFormat(map[string]any{"x": "%PROTOCOL%"})
			f.OmitEmptyValues = true
			return file(f)
		}(), want: "omit_empty_values: not supported"},
		{name: "stdout logger", config: &streamv3.StdoutAccessLog{}, want: "typed_config"},
		{name: "filter", config: file(jsonFormat(map[string]any{"x": "%PROTOCOL%"})),
			mutate: func(a *accesslogv3.AccessLog) {
				a.Filter = &accesslogv3.AccessLogFilter{FilterSpecifier: &accesslogv3.AccessLogFilter_NotHealthCheckFilter{}}
			},
			want: "access_log[0].filter: not supported"},
	}
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := anypb.New(tc.config)
			if err != nil {
				t.Fatal(err)
			}
			entry := &accesslogv3.AccessLog{Name: "envoy.access_loggers.file", ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg}}
			if tc.mutate != nil {
				tc.mutate(entry)
			}
			hcm := &hcmv3.HttpConnectionManager{
				StatPrefix:     "x",
				RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "x", ConfigSource: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}},
				HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
				AccessLog:      []*accesslogv3.AccessLog{entry},
			}
			err = Check(hcm)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want %q", err, tc.want)
			}
		})
	}
}
