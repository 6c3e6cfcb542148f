package policy

import (
	"cmp"
	"crypto/x509"
	"fmt"
	"net/url"
	"slices"
	"strings"

	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// KindACMEIssuer is the meshgate.dev/v1alpha1 ACMEIssuer: an ACME
// certificate authority (Let's Encrypt, ZeroSSL, a private one) from which
// the control plane obtains and renews the certificates of the HTTPS
// listeners that name it (TLSOptionACMEIssuer).
const KindACMEIssuer = "ACMEIssuer"

// TLSOptionACMEIssuer, a listener tls.options key, names the ACMEIssuer
// (in the listener owner's namespace) that provides the listener's
// certificate: the listener has no certificateRefs and an exact hostname.
const TLSOptionACMEIssuer = "meshgate.dev/acme-issuer"

// ACME challenge types an ACMEIssuer may use.
const (
	ACMEChallengeHTTP01    = "http-01"
	ACMEChallengeTLSALPN01 = "tls-alpn-01"
)

// DefaultACMERenewalWindowRatio is the share of a certificate's lifetime
// left when it is renewed (certmagic's default: a third).
const DefaultACMERenewalWindowRatio = 1.0 / 3

// ACMEIssuer is an ACMEIssuer resource.
type ACMEIssuer struct {
	Name      string
	Namespace string
	Spec      ACMEIssuerSpec
	Source    Source
}

// ACMEIssuerSpec is the spec of an ACMEIssuer.
type ACMEIssuerSpec struct {
	// Server is the URL of the CA's ACME directory (https), e.g.
	// https://acme-v02.api.letsencrypt.org/directory.
	Server string `json:"server"`
	// Email is the account's contact; optional.
	Email string `json:"email,omitempty"`
	// CAFile is a PEM bundle of the roots that the directory's own HTTPS
	// certificate chains to, when not a public CA (a private ACME server,
	// Pebble); relative to the policy file's directory. Unset: the
	// system's roots.
	CAFile string `json:"caFile,omitempty"`
	// Challenges are the challenge types the CA may validate, among
	// http-01 and tls-alpn-01; unset: both.
	Challenges []string `json:"challenges,omitempty"`
	// RenewalWindowRatio is the share of a certificate's lifetime left
	// when it is renewed, in (0, 1); unset: a third.
	RenewalWindowRatio float64 `json:"renewalWindowRatio,omitempty"`
}

// CAFilePath is the path of the issuer's CA bundle ("" without one):
// absolute, or relative to the directory of its policy file.
func (a *ACMEIssuer) CAFilePath() string {
	if a.Spec.CAFile == "" {
		return ""
	}
	return certificatePath(a.Source.File, a.Spec.CAFile)
}

// ChallengeTypes are the challenge types the issuer may use.
func (a *ACMEIssuer) ChallengeTypes() []string {
	if len(a.Spec.Challenges) == 0 {
		return []string{ACMEChallengeHTTP01, ACMEChallengeTLSALPN01}
	}
	return a.Spec.Challenges
}

// LookupACMEIssuer returns the ACMEIssuer namespace/name, or nil.
func (s *Set) LookupACMEIssuer(namespace, name string) *ACMEIssuer {
	namespace = cmp.Or(namespace, DefaultNamespace)
	for _, a := range s.ACMEIssuers {
		if cmp.Or(a.Namespace, DefaultNamespace) == namespace && a.Name == name {
			return a
		}
	}
	return nil
}

// validateACMEIssuers checks every well-formed ACMEIssuer.
func (l *loader) validateACMEIssuers(*setIndex) {
	slices.SortFunc(l.set.ACMEIssuers, func(a, b *ACMEIssuer) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, a := range l.set.ACMEIssuers {
		if !l.malformed[resourceKey{KindACMEIssuer, a.Namespace, a.Name}] {
			l.checkACMEIssuer(a)
		}
	}
}

// checkACMEIssuer checks an ACMEIssuer's fields, reading its CA bundle.
func (l *loader) checkACMEIssuer(a *ACMEIssuer) {
	spec := &a.Spec
	u, err := url.Parse(spec.Server)
	switch {
	case spec.Server == "":
		l.errorf(a.Source, "spec.server", "the URL of the ACME directory is required (e.g. https://acme-v02.api.letsencrypt.org/directory)")
	case err != nil:
		l.errorf(a.Source, "spec.server", "invalid URL %q: %v", spec.Server, err)
	case u.Scheme != "https" || u.Host == "":
		l.errorf(a.Source, "spec.server", "invalid ACME directory %q: want an https:// URL", spec.Server)
	}
	if spec.Email != "" && (!strings.Contains(spec.Email, "@") || strings.ContainsAny(spec.Email, " \t\n,")) {
		l.errorf(a.Source, "spec.email", "invalid email address %q", spec.Email)
	}
	for i, c := range spec.Challenges {
		if c != ACMEChallengeHTTP01 && c != ACMEChallengeTLSALPN01 {
			l.errorf(a.Source, fmt.Sprintf("spec.challenges[%d]", i), "unknown challenge type %q (want %s or %s; dns-01 is not supported)", c, ACMEChallengeHTTP01, ACMEChallengeTLSALPN01)
		}
	}
	if r := spec.RenewalWindowRatio; r < 0 || r >= 1 {
		l.errorf(a.Source, "spec.renewalWindowRatio", "%v is not a share of the lifetime: want a number between 0 and 1 (e.g. 0.33)", r)
	}
	if spec.CAFile != "" {
		data, where, err := readPEMFile(a.Source.File, spec.CAFile)
		switch {
		case err != nil:
			l.errorf(a.Source, "spec.caFile", "%v", err)
		case !x509.NewCertPool().AppendCertsFromPEM(data):
			l.errorf(a.Source, "spec.caFile", "%s holds no PEM certificate", where)
		}
	}
}

// checkListenerACME checks an HTTPS listener whose tls.options name an
// ACMEIssuer (p is the listener's path): no certificateRefs, an exact
// hostname (a wildcard needs the DNS-01 challenge), an issuer that exists.
func (l *loader) checkListenerACME(o listenerOwner, i int, p string, ls *gwapiv1.Listener) {
	if ls.TLS == nil {
		return
	}
	name, ok := ls.TLS.Options[TLSOptionACMEIssuer]
	if !ok {
		return
	}
	kp := mapKeyPath(p+".tls.options", TLSOptionACMEIssuer)
	reason := string(gwapiv1.ListenerReasonInvalidCertificateRef)
	if len(ls.TLS.CertificateRefs) > 0 {
		l.listenerErrorf(o, i, p+".tls.certificateRefs", lsInvalid, "a listener with %s has no certificateRefs: its certificate is obtained over ACME", TLSOptionACMEIssuer)
	}
	host := listenerHostnameOf(ls)
	switch {
	case host == "":
		l.listenerErrorf(o, i, p+".hostname", lsInvalid, "a listener with %s needs a hostname: the name its certificate is issued for", TLSOptionACMEIssuer)
	case strings.HasPrefix(host, "*."):
		l.listenerErrorf(o, i, p+".hostname", lsInvalid, "wildcard hostname %q: a wildcard certificate needs the ACME DNS-01 challenge, which meshgate does not do; give the listener a certificateRef, or an exact hostname", host)
	}
	ns := o.ownerNamespace()
	a := l.set.LookupACMEIssuer(ns, string(name))
	switch {
	case name == "":
		l.listenerErrorf(o, i, kp, reason, "the name of an ACMEIssuer is required")
	case a == nil && l.pass.rejected[resourceKey{KindACMEIssuer, cmp.Or(ns, DefaultNamespace), string(name)}].File != "":
		src := l.pass.rejected[resourceKey{KindACMEIssuer, cmp.Or(ns, DefaultNamespace), string(name)}]
		l.listenerErrorf(o, i, kp, reason, "ACMEIssuer %s/%s is invalid (%s:%d)", cmp.Or(ns, DefaultNamespace), name, src.File, src.Line)
	case a == nil:
		l.listenerErrorf(o, i, kp, reason, "ACMEIssuer %s/%s does not exist", cmp.Or(ns, DefaultNamespace), name)
	case l.malformed[resourceKey{KindACMEIssuer, a.Namespace, a.Name}]:
		l.listenerErrorf(o, i, kp, reason, "ACMEIssuer %s/%s is malformed (%s:%d)", cmp.Or(ns, DefaultNamespace), name, a.Source.File, a.Source.Line)
	}
}

// ListenerACMEIssuer is the ACMEIssuer a listener's tls.options name, or
// nil (none, or not in the set).
func (s *Set) ListenerACMEIssuer(ownerNamespace string, ls *gwapiv1.Listener) *ACMEIssuer {
	if ls.TLS == nil {
		return nil
	}
	name, ok := ls.TLS.Options[TLSOptionACMEIssuer]
	if !ok {
		return nil
	}
	return s.LookupACMEIssuer(ownerNamespace, string(name))
}
