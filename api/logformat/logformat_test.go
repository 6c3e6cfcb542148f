package logformat

import (
	"os"
	"reflect"
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		format string
		want   []Part
	}{
		{"plain", []Part{{Text: "plain"}}},
		{"%RESPONSE_CODE%", []Part{{Op: ResponseCode, Numeric: true}}},
		{"100%% %PROTOCOL%!", []Part{{Text: "100% "}, {Op: Protocol}, {Text: "!"}}},
		{"%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", []Part{{Op: RequestHeader, Header: "X-Envoy-Original-Path", Alternative: ":path"}}},
		{"%REQUEST_HEADER(user-agent)%", []Part{{Op: RequestHeader, Header: "User-Agent"}}},
		{"%RESP(x-envoy-upstream-service-time)%", []Part{{Op: ResponseHeader, Header: "X-Envoy-Upstream-Service-Time"}}},
		{"%DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_effective_policy_id)%", []Part{{Op: DynamicMetadata}}},
		{"", nil},
	}
	for _, tt := range tests {
		got, err := Parse(tt.format)
		if err != nil {
			t.Errorf("Parse(%q): %v", tt.format, err)
			continue
		}
		if !reflect.DeepEqual(got, tt.want) {
			t.Errorf("Parse(%q) = %+v, want %+v", tt.format, got, tt.want)
		}
	}
}

func TestParseRefuses(t *testing.T) {
	tests := []struct{ format, wantErr string }{
		{"%UPSTREAM_TRANSPORT_FAILURE_REASON%", "unknown command operator %UPSTREAM_TRANSPORT_FAILURE_REASON%"},
		{"%FOO(bar)%", "unknown command operator %FOO(bar)%"},
		{"%START_TIME(x)%", "takes no argument"},
		{"%REQ()%", "needs a header name"},
		{"%REQ(:PATH):10%", "length limit"},
		{"%REQ(:status)%", "pseudo-header"},
		{"%REQ(a b)%", "not allowed"},
		{"%DYNAMIC_METADATA(envoy.filters.http.rbac:shadow_effective_policy_id)%", "not supported"},
		{"50% off", "unterminated"},
		{strings.Repeat("x", 1025), "longer than"},
	}
	for _, tt := range tests {
		_, err := Parse(tt.format)
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("Parse(%q) error %v, want one containing %q", tt.format, err, tt.wantErr)
		}
	}
}

// TestOperatorsDocumented: docs/observability.md names every command
// operator the proxy implements, so that the list users read is the list
// the policy and the proxy accept.
func TestOperatorsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/observability.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, op := range Operators() {
		if !strings.Contains(string(doc), "`"+op) {
			t.Errorf("docs/observability.md does not list the command operator %s", op)
		}
	}
}
