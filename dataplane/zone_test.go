package dataplane

import (
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

func TestWithZone(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		zone, wantErr string
	}{
		{zone: ""},
		{zone: "eu-west-1a"},
		{zone: "zone_b.2"},
		{zone: "-a", wantErr: "starting and ending"},
		{zone: "a b", wantErr: "zone \"a b\""},
		{zone: strings.Repeat("z", 64), wantErr: "at most 63"},
	} {
		node, err := WithZone(&corev3.Node{Id: "n"}, tc.zone)
		switch {
		case tc.wantErr != "":
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("zone %q: error %v, want %q", tc.zone, err, tc.wantErr)
			}
		case err != nil:
			t.Errorf("zone %q: %v", tc.zone, err)
		case node.GetLocality().GetZone() != tc.zone:
			t.Errorf("zone %q: node locality %v", tc.zone, node.GetLocality())
		}
	}
}
