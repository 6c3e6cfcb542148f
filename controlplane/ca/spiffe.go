package ca

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/meshgate/meshgate/api/dnslabel"
)

// ID is a meshgate SPIFFE ID: spiffe://<trust-domain>/ns/<namespace>/svc/<service>.
type ID struct {
	TrustDomain string
	Namespace   string
	Service     string
}

// String formats the ID.
func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/svc/" + id.Service
}

// URL is the ID as a URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/svc/" + id.Service}
}

// ControlPlaneID is the control plane's own identity in trustDomain.
func ControlPlaneID(trustDomain string) ID {
	return ID{TrustDomain: trustDomain, Namespace: "meshgate-system", Service: "controlplane"}
}

// ParseID parses a meshgate SPIFFE ID strictly: lowercase trust domain, the
// path /ns/<namespace>/svc/<service> with DNS labels, nothing else (no port,
// user, query, fragment or percent-encoding).
func ParseID(s string) (ID, error) {
	rest, ok := strings.CutPrefix(s, "spiffe://")
	if !ok {
		return ID{}, fmt.Errorf("SPIFFE ID %q: must start with spiffe://", truncate(s))
	}
	td, path, ok := strings.Cut(rest, "/")
	if !ok {
		return ID{}, fmt.Errorf("SPIFFE ID %q: no path", truncate(s))
	}
	if err := CheckTrustDomain(td); err != nil {
		return ID{}, fmt.Errorf("SPIFFE ID %q: %w", truncate(s), err)
	}
	parts := strings.Split(path, "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "svc" {
		return ID{}, fmt.Errorf("SPIFFE ID %q: path must be /ns/<namespace>/svc/<service>", truncate(s))
	}
	id := ID{TrustDomain: td, Namespace: parts[1], Service: parts[3]}
	if !dnslabel.Valid(id.Namespace) || !dnslabel.Valid(id.Service) {
		return ID{}, fmt.Errorf("SPIFFE ID %q: namespace and service must be DNS labels", truncate(s))
	}
	return id, nil
}

// idFromURL parses a URI SAN.
func idFromURL(u *url.URL) (ID, error) {
	if u == nil {
		return ID{}, errors.New("empty URI")
	}
	s := u.String()
	id, err := ParseID(s)
	if err != nil {
		return ID{}, err
	}
	if id.String() != s {
		return ID{}, fmt.Errorf("SPIFFE ID %q: not in canonical form", truncate(s))
	}
	return id, nil
}

// CheckTrustDomain accepts a trust domain name: 1-255 characters of
// lowercase letters, digits, '-', '.' and '_'.
func CheckTrustDomain(td string) error {
	if td == "" || len(td) > 255 {
		return errors.New("trust domain must be 1 to 255 characters")
	}
	for i := 0; i < len(td); i++ {
		c := td[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_') {
			return fmt.Errorf("trust domain %q: character %q not allowed (lowercase letters, digits, '-', '.', '_')", truncate(td), c)
		}
	}
	return nil
}

// truncate bounds what untrusted input puts in an error message.
func truncate(s string) string {
	const max = 128
	if len(s) <= max {
		return s
	}
	return s[:max] + "..."
}
