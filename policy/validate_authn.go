package policy

import (
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strings"
	"time"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Limits of a SecurityPolicy's authentication.
const (
	maxJWTProviders   = 16
	maxClaimLength    = 256
	maxClaimPathParts = 8
	maxJWTClockSkew   = 10 * time.Minute
	maxInlineJWKS     = 64 << 10
	maxJWTConsumers   = 1000
	maxJWTSubject     = 256
)

// checkJWT checks spec.jwt: providers with unique names, exactly one JWKS
// source, durations, token locations and claim headers.
func (l *loader) checkJWT(src Source, j *JWTAuthentication) {
	if len(j.Providers) == 0 {
		l.errorf(src, "spec.jwt.providers", "at least one provider is required")
	}
	if len(j.Providers) > maxJWTProviders {
		l.errorf(src, "spec.jwt.providers", "%d providers: at most %d", len(j.Providers), maxJWTProviders)
	}
	names := map[string]int{}
	for i := range j.Providers {
		p := &j.Providers[i]
		path := fmt.Sprintf("spec.jwt.providers[%d]", i)
		if msg := checkDNSLabel(p.Name); msg != "" {
			l.errorf(src, path+".name", "invalid provider name %q: %s", p.Name, msg)
		} else if k, dup := names[p.Name]; dup {
			l.errorf(src, path+".name", "duplicate provider name %q (also spec.jwt.providers[%d])", p.Name, k)
		} else {
			names[p.Name] = i
		}
		switch {
		case p.RemoteJWKS == nil && p.LocalJWKS == nil:
			l.errorf(src, path, "remoteJWKS or localJWKS is required")
		case p.RemoteJWKS != nil && p.LocalJWKS != nil:
			l.errorf(src, path, "remoteJWKS and localJWKS are exclusive")
		case p.RemoteJWKS != nil:
			l.checkRemoteJWKS(src, path+".remoteJWKS", p.RemoteJWKS)
		default:
			lj := p.LocalJWKS
			switch {
			case (lj.Inline == "") == (lj.File == ""):
				l.errorf(src, path+".localJWKS", "exactly one of inline and file is required")
			case len(lj.Inline) > maxInlineJWKS:
				l.errorf(src, path+".localJWKS.inline", "longer than %d bytes (use file)", maxInlineJWKS)
			case lj.File != "" && !strings.HasPrefix(lj.File, "/"):
				l.errorf(src, path+".localJWKS.file", "file %q must be an absolute path (on the proxies' hosts)", lj.File)
			}
		}
		if p.ClockSkew != "" {
			if d, err := ParseDuration(gwapiv1.Duration(p.ClockSkew)); err != nil {
				l.errorf(src, path+".clockSkew", "%v", err)
			} else if d < 0 || d > maxJWTClockSkew || d%time.Second != 0 {
				l.errorf(src, path+".clockSkew", "clockSkew %s: want whole seconds from 0s to %s", p.ClockSkew, maxJWTClockSkew)
			}
		}
		if e := p.ExtractFrom; e != nil {
			if len(e.Headers)+len(e.Params)+len(e.Cookies) == 0 {
				l.errorf(src, path+".extractFrom", "at least one of headers, params, cookies is required")
			}
			for k, h := range e.Headers {
				if msg := checkHeaderName(h.Name); msg != "" {
					l.errorf(src, fmt.Sprintf("%s.extractFrom.headers[%d].name", path, k), "%s", msg)
				}
			}
			for k, q := range e.Params {
				if q == "" || strings.ContainsAny(q, "&=#? ") {
					l.errorf(src, fmt.Sprintf("%s.extractFrom.params[%d]", path, k), "invalid query parameter name %q", q)
				}
			}
			for k, c := range e.Cookies {
				if c == "" || strings.ContainsAny(c, "=;, \t") {
					l.errorf(src, fmt.Sprintf("%s.extractFrom.cookies[%d]", path, k), "invalid cookie name %q", c)
				}
			}
		}
		for k, ch := range p.ClaimToHeaders {
			cp := fmt.Sprintf("%s.claimToHeaders[%d]", path, k)
			if msg := checkHeaderName(ch.Header); msg != "" {
				l.errorf(src, cp+".header", "%s", msg)
			}
			if msg := checkClaimName(ch.Claim); msg != "" {
				l.errorf(src, cp+".claim", "%s", msg)
			}
		}
		l.checkJWTConsumers(src, path+".consumers", p.Consumers)
	}
}

// checkJWTConsumers checks a JWT provider's consumers: at most
// maxJWTConsumers, each a name (an RFC 1123 label) and a subject, both
// unique in the provider.
func (l *loader) checkJWTConsumers(src Source, path string, consumers []JWTConsumer) {
	if len(consumers) > maxJWTConsumers {
		l.errorf(src, path, "%d consumers: at most %d", len(consumers), maxJWTConsumers)
	}
	names, subjects := map[string]int{}, map[string]int{}
	for i, c := range consumers {
		cp := fmt.Sprintf("%s[%d]", path, i)
		if msg := checkDNSLabel(c.Name); msg != "" {
			l.errorf(src, cp+".name", "invalid consumer name %q: %s", c.Name, msg)
		} else if j, dup := names[c.Name]; dup {
			l.errorf(src, cp+".name", "duplicate consumer %q (also %s[%d])", c.Name, path, j)
		} else {
			names[c.Name] = i
		}
		switch {
		case c.Subject == "":
			l.errorf(src, cp+".subject", "a subject (the sub claim of the consumer's tokens) is required")
		case len(c.Subject) > maxJWTSubject:
			l.errorf(src, cp+".subject", "longer than %d bytes", maxJWTSubject)
		default:
			if j, dup := subjects[c.Subject]; dup {
				l.errorf(src, cp+".subject", "subject %q is also %s[%d]'s", c.Subject, path, j)
			} else {
				subjects[c.Subject] = i
			}
		}
	}
}

func (l *loader) checkRemoteJWKS(src Source, path string, r *RemoteJWKS) {
	u, err := url.Parse(r.URI)
	switch {
	case r.URI == "":
		l.errorf(src, path+".uri", "uri is required (an https:// URL)")
	case err != nil || u.Host == "":
		l.errorf(src, path+".uri", "invalid uri %q: want an https:// URL", r.URI)
	case u.Scheme != "https":
		l.errorf(src, path+".uri", "uri %q: want https (keys must not travel in the clear)", r.URI)
	}
	for _, d := range []struct{ field, value string }{{"cacheDuration", r.CacheDuration}, {"timeout", r.Timeout}} {
		if d.value == "" {
			continue
		}
		if v, err := ParseDuration(gwapiv1.Duration(d.value)); err != nil {
			l.errorf(src, path+"."+d.field, "%v", err)
		} else if v <= 0 {
			l.errorf(src, path+"."+d.field, "%s must be positive", d.field)
		}
	}
}

// checkClaimName returns why name is not a claim name ("a.b" for a nested
// claim), or "".
func checkClaimName(name string) string {
	if name == "" || len(name) > maxClaimLength {
		return fmt.Sprintf("claim name %q: want 1 to %d characters", name, maxClaimLength)
	}
	parts := strings.Split(name, ".")
	if len(parts) > maxClaimPathParts {
		return fmt.Sprintf("claim name %q: at most %d parts", name, maxClaimPathParts)
	}
	for _, p := range parts {
		if p == "" {
			return fmt.Sprintf("claim name %q: empty part", name)
		}
	}
	return ""
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

// Limits of API keys and basic auth.
const (
	maxAPIConsumers = 1000
	maxHtpasswd     = 256 << 10
)

// checkAPIKey checks spec.apiKey: consumers with unique names and
// well-formed SHA-256 hashes, each hash once (in the policy, its Secret
// and its consumers file); key locations.
func (l *loader) checkAPIKey(sp *SecurityPolicy, a *APIKeyAuthentication) {
	src, namespace := sp.Source, sp.Namespace
	a.SecretConsumers = nil
	if a.SecretRef != nil {
		l.apiKeySecret(src, namespace, a)
	}
	if len(a.Consumers)+len(a.SecretConsumers) == 0 && a.SecretRef == nil && a.ConsumersFile == "" {
		l.errorf(src, "spec.apiKey.consumers", "at least one consumer is required (or a secretRef, or a consumersFile)")
	}
	if len(a.Consumers) > maxAPIConsumers {
		l.errorf(src, "spec.apiKey.consumers", "%d consumers: at most %d", len(a.Consumers), maxAPIConsumers)
	}
	names, hashes := map[string]int{}, map[string]int{}
	for i, c := range a.Consumers {
		p := fmt.Sprintf("spec.apiKey.consumers[%d]", i)
		if msg := checkDNSLabel(c.Name); msg != "" {
			l.errorf(src, p+".name", "invalid consumer name %q: %s", c.Name, msg)
		} else if j, dup := names[c.Name]; dup {
			l.errorf(src, p+".name", "duplicate consumer %q (also spec.apiKey.consumers[%d])", c.Name, j)
		} else {
			names[c.Name] = i
		}
		if len(c.SHA256s) == 0 {
			l.errorf(src, p+".sha256", "at least one key hash is required (echo -n KEY | sha256sum)")
		}
		for k, h := range c.SHA256s {
			hp := fmt.Sprintf("%s.sha256[%d]", p, k)
			if !isSHA256Hex(h) {
				l.errorf(src, hp, "want 64 hex digits, the SHA-256 of the key (echo -n KEY | sha256sum)")
			} else if j, dup := hashes[strings.ToLower(h)]; dup {
				l.errorf(src, hp, "the same key hash as spec.apiKey.consumers[%d]", j)
			} else {
				hashes[strings.ToLower(h)] = i
			}
		}
	}
	for _, c := range a.SecretConsumers {
		if j, dup := names[c.Name]; dup {
			l.errorf(src, "spec.apiKey.secretRef.name", "consumer %q of the Secret is also spec.apiKey.consumers[%d]", c.Name, j)
			continue
		}
		for _, h := range c.SHA256s {
			if j, dup := hashes[h]; dup {
				l.errorf(src, "spec.apiKey.secretRef.name", "consumer %q of the Secret has the same key hash as spec.apiKey.consumers[%d]", c.Name, j)
			}
		}
	}
	if a.ConsumersFile != "" {
		l.checkConsumersFile(sp, a, names, hashes)
	}
	if e := a.ExtractFrom; e != nil {
		if len(e.Headers)+len(e.Params)+len(e.Cookies) == 0 {
			l.errorf(src, "spec.apiKey.extractFrom", "at least one of headers, params, cookies is required")
		}
		for k, h := range e.Headers {
			if msg := checkHeaderName(h); msg != "" {
				l.errorf(src, fmt.Sprintf("spec.apiKey.extractFrom.headers[%d]", k), "%s", msg)
			}
		}
		for k, q := range e.Params {
			if q == "" || strings.ContainsAny(q, "&=#? ") {
				l.errorf(src, fmt.Sprintf("spec.apiKey.extractFrom.params[%d]", k), "invalid query parameter name %q", q)
			}
		}
		for k, c := range e.Cookies {
			if c == "" || strings.ContainsAny(c, "=;, \t") {
				l.errorf(src, fmt.Sprintf("spec.apiKey.extractFrom.cookies[%d]", k), "invalid cookie name %q", c)
			}
		}
	}
	if a.ForwardConsumerHeader != "" {
		if msg := checkHeaderName(a.ForwardConsumerHeader); msg != "" {
			l.errorf(src, "spec.apiKey.forwardConsumerHeader", "%s", msg)
		}
	}
}

func isSHA256Hex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F') {
			return false
		}
	}
	return true
}

// checkBasicAuth checks spec.basicAuth: an htpasswd of bcrypt or {SHA}
// lines, each user once.
func (l *loader) checkBasicAuth(src Source, b *BasicAuthentication) {
	if strings.TrimSpace(b.Htpasswd) == "" {
		l.errorf(src, "spec.basicAuth.htpasswd", "htpasswd is required (user:hash lines; htpasswd -nbB user password)")
	}
	if len(b.Htpasswd) > maxHtpasswd {
		l.errorf(src, "spec.basicAuth.htpasswd", "longer than %d bytes", maxHtpasswd)
	}
	users := map[string]int{}
	for i, line := range strings.Split(b.Htpasswd, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		switch {
		case !ok || name == "":
			l.errorf(src, "spec.basicAuth.htpasswd", "line %d: want user:hash", i+1)
		case !strings.HasPrefix(hash, "{SHA}") && !strings.HasPrefix(hash, "$2a$") && !strings.HasPrefix(hash, "$2b$") && !strings.HasPrefix(hash, "$2y$"):
			l.errorf(src, "spec.basicAuth.htpasswd", "line %d: user %q: only bcrypt ($2y$...) and {SHA} passwords are supported", i+1, name)
		default:
			if j, dup := users[name]; dup {
				l.errorf(src, "spec.basicAuth.htpasswd", "line %d: user %q again (also line %d)", i+1, name, j)
			} else {
				users[name] = i + 1
			}
		}
	}
	if b.ForwardUsernameHeader != "" {
		if msg := checkHeaderName(b.ForwardUsernameHeader); msg != "" {
			l.errorf(src, "spec.basicAuth.forwardUsernameHeader", "%s", msg)
		}
	}
}

// apiKeySecret reads the consumers of spec.apiKey.secretRef: the Secret
// must exist in the policy's namespace; each data key is a consumer name
// (an RFC 1123 label), each line of its value a SHA-256 in hex.
func (l *loader) apiKeySecret(src Source, namespace string, a *APIKeyAuthentication) {
	field := "spec.apiKey.secretRef.name"
	var secret *Secret
	for _, s := range l.set.Secrets {
		if s.Name == a.SecretRef.Name && orDefaultNamespace(s.Namespace) == orDefaultNamespace(namespace) {
			secret = s
		}
	}
	if secret == nil {
		l.refErrorf(src, field, ReasonTargetNotFound, "secret %q not found in namespace %q", a.SecretRef.Name, orDefaultNamespace(namespace))
		return
	}
	for _, name := range slices.Sorted(maps.Keys(secret.Data)) {
		if msg := checkDNSLabel(name); msg != "" {
			l.errorf(src, field, "secret %q: key %q is not a consumer name: %s", secret.Name, name, msg)
			continue
		}
		c := APIKeyConsumer{Name: name}
		for line := range strings.SplitSeq(string(secret.Data[name]), "\n") {
			if line = strings.TrimSpace(line); line == "" {
				continue
			}
			if !isSHA256Hex(line) {
				// The value is secret-adjacent: say where, not what.
				l.errorf(src, field, "secret %q: consumer %q: a line is not 64 hex digits (the SHA-256 of a key)", secret.Name, name)
				continue
			}
			c.SHA256s = append(c.SHA256s, strings.ToLower(line))
		}
		if len(c.SHA256s) > 0 {
			a.SecretConsumers = append(a.SecretConsumers, c)
		}
	}
	if len(a.SecretConsumers) == 0 && len(a.Consumers) == 0 {
		l.errorf(src, field, "secret %q holds no consumer", secret.Name)
	}
}

func orDefaultNamespace(ns string) string {
	if ns == "" {
		return "default"
	}
	return ns
}
