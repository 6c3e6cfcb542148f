// Package logformat is meshgate's contract for access-log formats: the
// Envoy command operators (%RESPONSE_CODE%, %REQ(:PATH)%...) the proxy
// implements, and the parser of a format string, shared by the policy
// that checks a MeshConfig's accessLog fields, the xDS subset check that
// refuses an operator the proxy does not implement, and the proxy that
// evaluates them (docs/observability.md, "Access logs").
//
// A format string is literal text with command operators, as Envoy's:
// "%OPERATOR%" or "%OPERATOR(argument)%"; "%%" is a literal '%'. An
// operator the proxy does not implement, or an argument it does not
// accept, is an error naming it.
package logformat

import (
	"fmt"
	"slices"
	"strings"
)

// ID names one implemented command operator.
type ID int

// The implemented command operators (Envoy's names in Operators).
const (
	StartTime ID = iota + 1
	TraceID
	RouteName
	UpstreamHost
	UpstreamCluster
	RequestHeader
	ResponseHeader
	Protocol
	ResponseCode
	ResponseFlags
	ResponseCodeDetails
	DynamicMetadata
	BytesReceived
	BytesSent
	Duration
	ResponseDuration
	DownstreamPeerURISAN
	DownstreamRemoteAddress
	DownstreamRemoteAddressWithoutPort
	// Principal is the request's authenticated principal
	// (%DYNAMIC_METADATA(meshgate.authn:principal)%).
	Principal
)

// Argument kinds.
type argKind int

const (
	argNone     argKind = iota // %OP%
	argHeader                  // %OP(header)% or %OP(header?alternative)%
	argMetadata                // %OP(namespace:key)%, only the keys in metadataKeys
)

// operator is one implemented command operator.
type operator struct {
	id  ID
	arg argKind
	// numeric: the value is a number (a JSON number when it is a whole
	// json_format value).
	numeric bool
}

// operators are the command operators the proxy implements, by Envoy name.
var operators = map[string]operator{
	"START_TIME":                             {id: StartTime},
	"TRACE_ID":                               {id: TraceID},
	"ROUTE_NAME":                             {id: RouteName},
	"UPSTREAM_HOST":                          {id: UpstreamHost},
	"UPSTREAM_CLUSTER":                       {id: UpstreamCluster},
	"REQ":                                    {id: RequestHeader, arg: argHeader},
	"REQUEST_HEADER":                         {id: RequestHeader, arg: argHeader},
	"RESP":                                   {id: ResponseHeader, arg: argHeader},
	"RESPONSE_HEADER":                        {id: ResponseHeader, arg: argHeader},
	"PROTOCOL":                               {id: Protocol},
	"RESPONSE_CODE":                          {id: ResponseCode, numeric: true},
	"RESPONSE_FLAGS":                         {id: ResponseFlags},
	"RESPONSE_CODE_DETAILS":                  {id: ResponseCodeDetails},
	"DYNAMIC_METADATA":                       {id: DynamicMetadata, arg: argMetadata},
	"BYTES_RECEIVED":                         {id: BytesReceived, numeric: true},
	"BYTES_SENT":                             {id: BytesSent, numeric: true},
	"DURATION":                               {id: Duration, numeric: true},
	"RESPONSE_DURATION":                      {id: ResponseDuration, numeric: true},
	"DOWNSTREAM_PEER_URI_SAN":                {id: DownstreamPeerURISAN},
	"DOWNSTREAM_REMOTE_ADDRESS":              {id: DownstreamRemoteAddress},
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": {id: DownstreamRemoteAddressWithoutPort},
}

// RBACMetadataNamespace and RBACPolicyKey name the dynamic metadata the
// RBAC filter sets on a request it denies, as Envoy's RBAC filter does:
// the policy that decided (%DYNAMIC_METADATA(envoy.filters.http.rbac:enforced_effective_policy_id)%).
const (
	RBACMetadataNamespace = "envoy.filters.http.rbac"
	RBACPolicyKey         = "enforced_effective_policy_id"
)

// AuthnMetadataNamespace and PrincipalKey name meshgate's dynamic metadata
// of the request's authenticated principal (a JWT's sub, an API consumer, a
// basic-auth user): %DYNAMIC_METADATA(meshgate.authn:principal)%. An Envoy
// given the same format logs "-" there.
const (
	AuthnMetadataNamespace = "meshgate.authn"
	PrincipalKey           = "principal"
)

// metadataKeys are the DYNAMIC_METADATA arguments implemented.
var metadataKeys = []string{RBACMetadataNamespace + ":" + RBACPolicyKey, AuthnMetadataNamespace + ":" + PrincipalKey}

// Operators returns the names of the implemented command operators, sorted.
func Operators() []string {
	names := make([]string, 0, len(operators))
	for n := range operators {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// Part is a piece of a parsed format string: literal text (Op 0) or one
// command operator.
type Part struct {
	// Text is the literal text when Op is 0.
	Text string
	// Op is the operator; 0 for literal text.
	Op ID
	// Header is the header an operator with a header argument reads
	// (canonical form, or a pseudo-header ":path", ":method", ":authority",
	// ":scheme" in lower case), and Alternative the one it reads when
	// Header is absent ("" for none).
	Header, Alternative string
	// Numeric: the operator's value is a number.
	Numeric bool
}

// maxFormatLength bounds a format string.
const maxFormatLength = 1024

// Parse parses a format string into parts. Errors name the operator.
func Parse(format string) ([]Part, error) {
	if len(format) > maxFormatLength {
		return nil, fmt.Errorf("format longer than %d characters", maxFormatLength)
	}
	var parts []Part
	var text strings.Builder
	flush := func() {
		if text.Len() > 0 {
			parts = append(parts, Part{Text: text.String()})
			text.Reset()
		}
	}
	for i := 0; i < len(format); {
		c := format[i]
		if c != '%' {
			text.WriteByte(c)
			i++
			continue
		}
		if i+1 < len(format) && format[i+1] == '%' {
			text.WriteByte('%')
			i += 2
			continue
		}
		token, n, err := scanOperator(format[i:])
		if err != nil {
			return nil, err
		}
		p, err := parseOperator(token)
		if err != nil {
			return nil, err
		}
		flush()
		parts = append(parts, p)
		i += n
	}
	flush()
	return parts, nil
}

// scanOperator reads the command operator at the start of s ("%NAME%",
// "%NAME(argument)%", "%NAME(argument):N%"): its inside and its length.
func scanOperator(s string) (token string, n int, err error) {
	i := 1
	for i < len(s) && (s[i] == '_' || 'A' <= s[i] && s[i] <= 'Z' || '0' <= s[i] && s[i] <= '9') {
		i++
	}
	if i < len(s) && s[i] == '(' {
		close := strings.IndexByte(s[i:], ')')
		if close < 0 {
			return "", 0, fmt.Errorf("unterminated command operator %q", s)
		}
		i += close + 1
	}
	end := strings.IndexByte(s[i:], '%')
	if end < 0 {
		return "", 0, fmt.Errorf("unterminated command operator %q (a literal %% is written %%%%)", s)
	}
	i += end
	return s[1:i], i + 1, nil
}

// parseOperator parses the inside of one %...%.
func parseOperator(token string) (Part, error) {
	name, arg, hasArg := strings.Cut(token, "(")
	if hasArg {
		var ok bool
		if arg, ok = strings.CutSuffix(arg, ")"); !ok {
			return Part{}, fmt.Errorf("command operator %%%s%%: want %s(argument) with nothing after the parenthesis (a length limit :N is not supported)", token, name)
		}
	}
	op, ok := operators[name]
	if !ok {
		return Part{}, fmt.Errorf("unknown command operator %%%s%%: the proxy does not implement it (docs/observability.md lists those it does)", token)
	}
	p := Part{Op: op.id, Numeric: op.numeric}
	switch op.arg {
	case argNone:
		if hasArg {
			return Part{}, fmt.Errorf("command operator %%%s%%: %s takes no argument (a START_TIME format is not supported)", token, name)
		}
	case argHeader:
		if !hasArg || arg == "" {
			return Part{}, fmt.Errorf("command operator %%%s%%: %s needs a header name: %s(name) or %s(name?alternative)", token, name, name, name)
		}
		header, alt, _ := strings.Cut(arg, "?")
		var err error
		if p.Header, err = headerName(header); err != nil {
			return Part{}, fmt.Errorf("command operator %%%s%%: %w", token, err)
		}
		if alt != "" {
			if p.Alternative, err = headerName(alt); err != nil {
				return Part{}, fmt.Errorf("command operator %%%s%%: %w", token, err)
			}
		}
	case argMetadata:
		if !slices.Contains(metadataKeys, arg) {
			return Part{}, fmt.Errorf("command operator %%%s%%: %s(%s) not supported (the proxy implements %s)", token, name, arg, strings.Join(metadataKeys, ", "))
		}
		if arg == AuthnMetadataNamespace+":"+PrincipalKey {
			p.Op = Principal
		}
	}
	return p, nil
}

// pseudoHeaders are the HTTP/2 pseudo-headers an operator may read.
var pseudoHeaders = []string{":path", ":method", ":authority", ":scheme"}

// headerName checks a header name and returns it canonical (pseudo-headers
// in lower case).
func headerName(h string) (string, error) {
	if strings.HasPrefix(h, ":") {
		lower := strings.ToLower(h)
		if !slices.Contains(pseudoHeaders, lower) {
			return "", fmt.Errorf("pseudo-header %q not supported (want one of %s)", h, strings.Join(pseudoHeaders, ", "))
		}
		return lower, nil
	}
	if h == "" || len(h) > 256 {
		return "", fmt.Errorf("header name %q: want 1 to 256 characters", h)
	}
	for i := range len(h) {
		if !isTokenChar(h[i]) {
			return "", fmt.Errorf("header name %q: character %q not allowed", h, h[i])
		}
	}
	return canonicalHeaderKey(h), nil
}

func isTokenChar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$&'*+-.^_`|~", c) >= 0
}

// canonicalHeaderKey is net/textproto's canonical form (Content-Type), for
// a name of token characters.
func canonicalHeaderKey(h string) string {
	b := []byte(h)
	upper := true
	for i, c := range b {
		switch {
		case upper && 'a' <= c && c <= 'z':
			b[i] = c - 'a' + 'A'
		case !upper && 'A' <= c && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
		upper = c == '-'
	}
	return string(b)
}
