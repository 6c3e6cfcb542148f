package xdsnode

import "testing"

// TestParseOutboundTCP: service[.namespace]:port=ip:port, and clear
// errors for anything else.
func TestParseOutboundTCP(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		in, want, err string
	}{
		{in: "db:5432=127.0.0.1:15432", want: "db:5432=127.0.0.1:15432"},
		{in: " db.data:5432=[::1]:15432 ", want: "db.data:5432=[::1]:15432"},
		{in: "db:5432", err: `outbound TCP listener "db:5432": want service[.namespace]:port=ip:port`},
		{in: "db=127.0.0.1:1", err: `outbound TCP listener "db=127.0.0.1:1": want service[.namespace]:port=ip:port (a port 1-65535)`},
		{in: "db:0=127.0.0.1:1", err: `outbound TCP listener "db:0=127.0.0.1:1": want service[.namespace]:port=ip:port (a port 1-65535)`},
		{in: "db:1=localhost:1", err: `outbound TCP listener "db:1=localhost:1": the local address "localhost:1" is not ip:port`},
	} {
		got, err := ParseOutboundTCP(tt.in)
		switch {
		case tt.err != "" && (err == nil || err.Error() != tt.err):
			t.Errorf("ParseOutboundTCP(%q) error %v, want %s", tt.in, err, tt.err)
		case tt.err == "" && (err != nil || got.String() != tt.want):
			t.Errorf("ParseOutboundTCP(%q) = %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
	list, err := ParseOutboundTCPList("a:1=127.0.0.1:1,,b.x:2=127.0.0.1:2")
	if err != nil || len(list) != 2 || list[1].Namespace != "x" || list[1].Port != 2 {
		t.Errorf("ParseOutboundTCPList = %v, %v", list, err)
	}
}
