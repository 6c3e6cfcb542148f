package policy

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"regexp/syntax"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"

	"github.com/meshgate/meshgate/api/dnslabel"
	"github.com/meshgate/meshgate/api/regexlimit"
)

// checkDNSLabel returns why s is not an RFC 1123 label (api/dnslabel), or "".
func checkDNSLabel(s string) string {
	if err := dnslabel.Check(s); err != nil {
		return err.Error()
	}
	return ""
}

// checkSubdomain returns why s is not an RFC 1123 subdomain (dot-separated
// labels, at most 253 characters), or "".
func checkSubdomain(s string) string {
	if len(s) > 253 {
		return "must be at most 253 characters"
	}
	for _, label := range strings.Split(s, ".") {
		if !dnslabel.Valid(label) {
			return "must be dot-separated labels of lowercase letters, digits and '-'"
		}
	}
	return ""
}

// checkHostname returns why s is not a Gateway API hostname, or "". With
// wildcard, a leading "*." label is allowed.
func checkHostname(s string, wildcard bool) string {
	if s == "" {
		return "hostname must not be empty"
	}
	if _, err := netip.ParseAddr(s); err == nil {
		return "must be a DNS name, not an IP address"
	}
	name := s
	if rest, ok := strings.CutPrefix(s, "*."); ok {
		if !wildcard {
			return "wildcards are not allowed here"
		}
		name = rest
	}
	if msg := checkSubdomain(name); msg != "" {
		return "must be a lowercase RFC 1123 hostname, optionally starting with \"*.\""
	}
	return ""
}

// hostnamesIntersect reports whether a listener hostname and a route
// hostname can match the same request host, as the Gateway API defines it.
func hostnamesIntersect(listener, route string) bool {
	return len(IntersectHostnames(listener, []gwapiv1.Hostname{gwapiv1.Hostname(route)})) > 0
}

// IntersectHostnames returns the hostnames a route serves on a listener of
// hostname listener ("*" for none), per the Gateway API rules: a route
// without hostnames takes the listener's; an exact hostname must match the
// listener's (wildcard) hostname; of two overlapping wildcards the more
// specific one wins. Empty: the route does not attach to that listener.
func IntersectHostnames(listener string, routeHostnames []gwapiv1.Hostname) []string {
	if len(routeHostnames) == 0 {
		return []string{listener}
	}
	var out []string
	for _, rh := range routeHostnames {
		r := strings.ToLower(string(rh))
		switch {
		case HostnameCovers(listener, r):
			out = append(out, r)
		case HostnameCovers(r, listener):
			out = append(out, listener)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// HostnameCovers reports whether pattern (exact, "*.suffix" or "*") matches
// every host that host matches.
func HostnameCovers(pattern, host string) bool {
	switch {
	case pattern == host, pattern == "*":
		return true
	case strings.HasPrefix(pattern, "*."):
		suffix := pattern[1:]
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return false
}

// checkHeaderName returns why s is not an HTTP header (or query parameter)
// name, or "".
func checkHeaderName(s string) string {
	if s == "" {
		return "name is required"
	}
	if !httpguts.ValidHeaderFieldName(s) {
		return fmt.Sprintf("invalid name %q: only letters, digits and !#$%%&'*+-.^_`|~ are allowed", s)
	}
	return ""
}

// checkMatchPath returns why an Exact or PathPrefix match value is invalid,
// or "".
func checkMatchPath(p string) string {
	switch {
	case !strings.HasPrefix(p, "/"):
		return fmt.Sprintf("path %q must start with \"/\"", p)
	case strings.Contains(p, "//"), strings.Contains(p, "/./"), strings.Contains(p, "/../"),
		strings.HasSuffix(p, "/.."), strings.HasSuffix(p, "/."):
		return fmt.Sprintf("path %q must not contain \"//\", \"/./\" or \"/../\"", p)
	case strings.ContainsAny(p, "#?"):
		return fmt.Sprintf("path %q must not contain '?' or '#'", p)
	case strings.Contains(strings.ToLower(p), "%2f"):
		return fmt.Sprintf("path %q must not contain an encoded '/' (%%2F)", p)
	}
	return ""
}

// checkRegexp returns why a regular expression does not compile as RE2, or
// is over the limits the proxies enforce (api/regexlimit), or "".
func checkRegexp(re string) string {
	if err := regexlimit.Check(re); errors.Is(err, regexlimit.ErrTooLong) || errors.Is(err, regexlimit.ErrTooComplex) {
		return fmt.Sprintf("regular expression %.40q...: %v", re, err)
	}
	if _, err := regexp.Compile(re); err != nil {
		reason := err.Error()
		var syntaxErr *syntax.Error
		if errors.As(err, &syntaxErr) {
			reason = syntaxErr.Code.String()
		}
		return fmt.Sprintf("invalid regular expression %q (RE2 syntax): %s", re, reason)
	}
	return ""
}

// gatewayDurationRE is the GEP-2257 duration syntax.
var gatewayDurationRE = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// ParseDuration parses a Gateway API duration (GEP-2257: up to four groups of
// 1-5 digits with a unit h, m, s or ms, such as "1h30m" or "500ms").
func ParseDuration(d gwapiv1.Duration) (time.Duration, error) {
	s := string(d)
	if !gatewayDurationRE.MatchString(s) {
		return 0, fmt.Errorf("invalid duration %q: want up to four <number><unit> groups with units h, m, s, ms (e.g. 1m30s)", s)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %w", s, err)
	}
	return v, nil
}

// checkHostPort returns why address is not ip:port with a port in
// 1-65535, or "". Endpoints are IP addresses: the proxies do not resolve
// names (a DNS-resolved endpoint type may come later).
func checkHostPort(address string) string {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return fmt.Sprintf("address %q must be host:port", address)
	}
	if host == "" {
		return fmt.Sprintf("address %q has no host", address)
	}
	if net.ParseIP(host) == nil {
		return fmt.Sprintf("address %q: host must be an IP address (DNS names are not supported yet)", address)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Sprintf("address %q: port must be a number in 1-65535", address)
	}
	return ""
}
