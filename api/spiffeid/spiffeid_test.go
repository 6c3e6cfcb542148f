package spiffeid

import (
	"crypto/x509"
	"net/url"
	"strings"
	"testing"
)

var orders = ID{TrustDomain: "meshgate.local", Namespace: "default", Service: "orders"}

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    ID
		wantErr string
	}{
		{in: "spiffe://meshgate.local/ns/default/svc/orders", want: orders},
		{in: "spiffe://corp_1.example-a/ns/shop/svc/v2", want: ID{"corp_1.example-a", "shop", "v2"}},
		{in: "https://meshgate.local/ns/default/svc/orders", wantErr: "must start with spiffe://"},
		{in: "spiffe://meshgate.local", wantErr: "no path"},
		{in: "spiffe:///ns/default/svc/orders", wantErr: "1 to 255"},
		{in: "spiffe://Meshgate.local/ns/default/svc/orders", wantErr: "not allowed"},
		{in: "spiffe://meshgate.local:8443/ns/default/svc/orders", wantErr: "not allowed"},
		{in: "spiffe://user@meshgate.local/ns/default/svc/orders", wantErr: "not allowed"},
		{in: "spiffe://" + strings.Repeat("a", 256) + "/ns/default/svc/orders", wantErr: "1 to 255"},
		{in: "spiffe://meshgate.local/svc/orders", wantErr: "path must be"},
		{in: "spiffe://meshgate.local/ns/default/svc/orders/", wantErr: "path must be"},
		{in: "spiffe://meshgate.local/ns/default/svc/orders/x", wantErr: "path must be"},
		{in: "spiffe://meshgate.local/ns//svc/orders", wantErr: "DNS labels"},
		{in: "spiffe://meshgate.local/ns/default/svc/Orders", wantErr: "DNS labels"},
		{in: "spiffe://meshgate.local/ns/default/svc/orders?x=1", wantErr: "DNS labels"},
		{in: "spiffe://meshgate.local/ns/default/svc/ord%65rs", wantErr: "DNS labels"},
		{in: "spiffe://meshgate.local/ns/default/svc/orders#f", wantErr: "DNS labels"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Parse(%q) = %v, %v; want error %q", tt.in, got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want || got.String() != tt.in {
				t.Fatalf("Parse(%q) = %v (%s), %v; want %v", tt.in, got, got, err, tt.want)
			}
			if u, err := FromURL(got.URL()); err != nil || u != got {
				t.Fatalf("FromURL(URL()) = %v, %v", u, err)
			}
		})
	}
}

func TestNew(t *testing.T) {
	tests := []struct {
		td, ns, svc string
		wantErr     string
	}{
		{"meshgate.local", "default", "orders", ""},
		{"", "default", "orders", "trust domain"},
		{"Corp", "default", "orders", `trust domain "Corp"`},
		{"meshgate.local", "", "orders", "namespace is required"},
		{"meshgate.local", "default", "", "service is required"},
		{"meshgate.local", "Shop", "orders", `namespace "Shop"`},
		{"meshgate.local", "default", "orders-", `service "orders-"`},
	}
	for _, tt := range tests {
		id, err := New(tt.td, tt.ns, tt.svc)
		if tt.wantErr == "" {
			if err != nil || id.String() != "spiffe://"+tt.td+"/ns/"+tt.ns+"/svc/"+tt.svc {
				t.Errorf("New(%q, %q, %q) = %v, %v", tt.td, tt.ns, tt.svc, id, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
			t.Errorf("New(%q, %q, %q) error = %v, want %q", tt.td, tt.ns, tt.svc, err, tt.wantErr)
		}
	}
}

func TestFromURLCanonical(t *testing.T) {
	for _, u := range []*url.URL{
		nil,
		{Scheme: "spiffe", Host: "meshgate.local", Path: "/ns/default/svc/orders", RawQuery: "x"},
		{Scheme: "spiffe", Host: "meshgate.local", Path: "/ns/default/svc/orders", ForceQuery: true},
		{Scheme: "spiffe", Host: "meshgate.local", Path: "/ns/default/svc/orders", Fragment: "f"},
		{Scheme: "spiffe", Host: "meshgate.local", Path: "/ns/default/svc/orders", User: url.User("u")},
		{Scheme: "SPIFFE", Host: "meshgate.local", Path: "/ns/default/svc/orders"},
	} {
		if id, err := FromURL(u); err == nil {
			t.Errorf("FromURL(%v) = %v, want an error", u, id)
		}
	}
}

// TestFromCertificate: the one rule for certificates and CSRs, exactly one
// URI SAN, a meshgate SPIFFE ID.
func TestFromCertificate(t *testing.T) {
	parse := func(ss ...string) []*url.URL {
		var out []*url.URL
		for _, s := range ss {
			u, err := url.Parse(s)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, u)
		}
		return out
	}
	const web = "spiffe://meshgate.local/ns/default/svc/web"
	tests := []struct {
		name    string
		uris    []*url.URL
		wantErr string
	}{
		{"one SPIFFE ID", parse(orders.String()), ""},
		{"none", nil, "has 0 URI SANs, want exactly one SPIFFE ID"},
		{"two SPIFFE IDs", parse(orders.String(), web), "has 2 URI SANs"},
		{"a SPIFFE ID and another URI", parse(orders.String(), "https://orders.example"), "has 2 URI SANs"},
		{"another URI", parse("https://orders.example"), "must start with spiffe://"},
		{"a SPIFFE ID of another shape", parse("spiffe://meshgate.local/orders"), "path must be"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for what, get := range map[string]func() (ID, error){
				"certificate": func() (ID, error) { return FromCertificate(&x509.Certificate{URIs: tt.uris}) },
				"CSR":         func() (ID, error) { return FromCSR(&x509.CertificateRequest{URIs: tt.uris}) },
			} {
				id, err := get()
				if tt.wantErr == "" {
					if err != nil || id != orders {
						t.Fatalf("%s: %v, %v; want %v", what, id, err, orders)
					}
					continue
				}
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || id != (ID{}) {
					t.Fatalf("%s: %v, %v; want error %q", what, id, err, tt.wantErr)
				}
			}
		})
	}
}

func TestPrefixes(t *testing.T) {
	if got := TrustDomainPrefix("td"); got != "spiffe://td/" {
		t.Errorf("TrustDomainPrefix = %q", got)
	}
	if got := NamespacePrefix("td", "ops"); got != "spiffe://td/ns/ops/" {
		t.Errorf("NamespacePrefix = %q", got)
	}
	if got := ControlPlane("td").String(); got != "spiffe://td/ns/meshgate-system/svc/controlplane" {
		t.Errorf("ControlPlane = %q", got)
	}
	if got := (ID{}).String(); got != "" {
		t.Errorf("zero ID = %q", got)
	}
	for _, id := range []ID{orders, ControlPlane("td")} {
		if !strings.HasPrefix(id.String(), NamespacePrefix(id.TrustDomain, id.Namespace)) {
			t.Errorf("%s does not start with its namespace prefix", id)
		}
	}
}

// FuzzParse: Parse never panics, and what it accepts it formats back to the
// same text.
func FuzzParse(f *testing.F) {
	for _, s := range []string{orders.String(), "spiffe://a/ns/b/svc/c", "spiffe://", "spiffe://a/ns/b/svc/c/d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := Parse(s)
		if err == nil && id.String() != s {
			t.Fatalf("Parse(%q) = %v, which formats as %q", s, id, id.String())
		}
	})
}
