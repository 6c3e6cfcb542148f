package headers

import (
	"errors"
	"net/http"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

func option(key, value string, action corev3.HeaderValueOption_HeaderAppendAction) *corev3.HeaderValueOption {
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: key, Value: value}, AppendAction: action}
}

// TestListAppliesInOrder: removals and additions apply in the order given.
func TestListAppliesInOrder(t *testing.T) {
	t.Parallel()
	var l List
	for _, step := range []func() error{
		func() error { l.Remove("x-a"); return nil },
		func() error { return addTo(&l, option("x-a", "1", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)) },
		func() error { return addTo(&l, option("x-b", "1", corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD)) },
		func() error { l.Remove("X-B"); return nil },
		func() error { return addTo(&l, option("x-c", "", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD)) },
		func() error { return addTo(&l, option("x-d", "2", corev3.HeaderValueOption_ADD_IF_ABSENT)) },
		func() error { return addTo(&l, option("x-d", "3", corev3.HeaderValueOption_OVERWRITE_IF_EXISTS)) },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	h := http.Header{"X-A": {"0"}, "X-B": {"0"}, "X-C": {"0"}}
	l.Apply(h)
	want := http.Header{"X-A": {"1"}, "X-C": {"0"}, "X-D": {"3"}}
	if len(h) != len(want) {
		t.Fatalf("headers = %v, want %v", h, want)
	}
	for k, v := range want {
		if !slices.Equal(h[k], v) {
			t.Errorf("%s = %v, want %v", k, h[k], v)
		}
	}
	if (&List{}).Empty() != true || l.Empty() {
		t.Error("Empty")
	}
}

func addTo(l *List, opt *corev3.HeaderValueOption) error {
	o, err := CompileOption(opt, true, nil)
	if err != nil {
		return err
	}
	l.Add(o)
	return nil
}

func TestCompileOptionErrors(t *testing.T) {
	t.Parallel()
	refuse := func(name string) error {
		if name == "x-refused" {
			return errors.New("refused")
		}
		return nil
	}
	tests := []struct {
		name    string
		opt     *corev3.HeaderValueOption
		request bool
		want    string
	}{
		{"pseudo-header", option(":path", "x", 0), true, `header.key: pseudo-header ":path"`},
		{"host on a request", option("Host", "x", 0), true, `header.key: "host" cannot be modified`},
		{"empty name", option("", "x", 0), false, "header.key: empty header name"},
		{"formatter", option("x", "%START_TIME%", 0), false, "header.value:"},
		//lint:ignore SA1019 the deprecated field must be refused (NACKed)
		{"append", &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: "x", Value: "y"}, Append: wrapperspb.Bool(true)}, false, "append: not supported, use append_action"},
		{"caller's check", option("x-refused", "y", 0), false, "header.key: refused"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := CompileOption(tc.opt, tc.request, refuse)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := CompileOption(option("Host", "x", 0), false, nil); err != nil {
		t.Errorf("Host on a response: %v", err)
	}
}
