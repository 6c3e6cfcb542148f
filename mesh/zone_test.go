package mesh

import (
	"maps"
	"testing"
)

func TestWithZoneLabel(t *testing.T) {
	t.Parallel()
	given := map[string]string{"version": "v1"}
	for _, tc := range []struct {
		name   string
		labels map[string]string
		zone   string
		want   map[string]string
	}{
		{"no zone", given, "", given},
		{"zone added", given, "a", map[string]string{"version": "v1", zoneLabel: "a"}},
		{"a zone label wins", map[string]string{"zone": "b"}, "a", map[string]string{"zone": "b"}},
		{"no labels", nil, "a", map[string]string{zoneLabel: "a"}},
	} {
		if got := withZoneLabel(tc.labels, tc.zone); !maps.Equal(got, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
	if given[zoneLabel] != "" {
		t.Error("the given labels were changed")
	}
}
