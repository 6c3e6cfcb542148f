package servicemeta

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/structpb"
)

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	in := Service{VIP: netip.MustParseAddr("240.240.3.4"), Hostnames: Hostnames("default", "orders", DefaultDNSDomain)}
	out, err := Parse(in.Struct())
	if err != nil {
		t.Fatal(err)
	}
	if out.VIP != in.VIP || !slices.Equal(out.Hostnames, []string{"orders", "orders.default", "orders.default.svc.meshgate.local"}) {
		t.Errorf("round trip: got %+v, want %+v", out, in)
	}
	// The wire form the proxies rely on: exactly these keys.
	js, err := in.Struct().MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"hostnames":["orders","orders.default","orders.default.svc.meshgate.local"],"vip":"240.240.3.4"}`; strings.ReplaceAll(string(js), " ", "") != want {
		t.Errorf("wire form %s; want %s", js, want)
	}
	if s, err := Parse(nil); err != nil || s.VIP.IsValid() || s.Hostnames != nil {
		t.Errorf("Parse(nil) = %+v, %v; want the zero Service", s, err)
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	many := make([]any, MaxHostnames+1)
	for i := range many {
		many[i] = "a"
	}
	cases := []struct {
		name    string
		in      map[string]any
		wantErr string
	}{
		{"vip not a string", map[string]any{"vip": 3.0}, "meshgate.dev/service.vip: must be a string"},
		{"vip not an address", map[string]any{"vip": "orders"}, `"orders" is not an IPv4 address`},
		{"vip IPv6", map[string]any{"vip": "fd00::1"}, "not an IPv4 address"},
		{"hostnames not a list", map[string]any{"hostnames": "orders"}, "hostnames: must be a list"},
		{"hostname empty", map[string]any{"hostnames": []any{"orders", ""}}, "hostnames[1]: must be a DNS name"},
		{"hostname not a string", map[string]any{"hostnames": []any{1.0}}, "hostnames[0]"},
		{"too many hostnames", map[string]any{"hostnames": many}, "at most 16"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			st, err := structpb.NewStruct(tc.in)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Parse(st); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("Parse error = %v; want one containing %q", err, tc.wantErr)
			}
		})
	}
	// Unknown fields are ignored: a newer control plane may add some.
	st, _ := structpb.NewStruct(map[string]any{"vip": "240.240.0.9", "ports": []any{80.0}})
	if s, err := Parse(st); err != nil || s.VIP != netip.MustParseAddr("240.240.0.9") {
		t.Errorf("Parse with an unknown field = %+v, %v", s, err)
	}
}
