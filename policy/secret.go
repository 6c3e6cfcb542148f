package policy

import (
	"cmp"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// KindSecret is Kubernetes' core Secret (apiVersion v1): a Gateway
// listener's certificate and private key, of type kubernetes.io/tls.
const KindSecret = "Secret"

// Secret types and keys of a TLS Secret, as Kubernetes has them.
const (
	SecretTypeTLS  = "kubernetes.io/tls"
	SecretTLSCert  = "tls.crt"
	SecretTLSKey   = "tls.key"
	maxSecretBytes = 1 << 20
)

// Annotations of a Secret whose certificate and key are PEM files on the
// control plane's disk rather than in the document: a path absolute or
// relative to the directory of the policy file. The files are read at
// every load of the policy.
const (
	AnnotationTLSCertFile = "meshgate.dev/tls-cert-file"
	AnnotationTLSKeyFile  = "meshgate.dev/tls-key-file"
)

// Listener tls.options keys (docs/policy-reference.md).
const (
	// TLSOptionMinVersion is the lowest TLS version a listener accepts:
	// "1.2" (default) or "1.3".
	TLSOptionMinVersion = "meshgate.dev/min-tls-version"
	// TLSOptionCipherSuites lists, comma-separated, the TLS 1.2 cipher
	// suites a listener accepts, by their OpenSSL names (as Envoy's
	// cipher_suites); unset: the proxy's defaults. TLS 1.3 suites are
	// not configurable.
	TLSOptionCipherSuites = "meshgate.dev/cipher-suites"
	// DefaultTLSMinVersion is TLS 1.2.
	DefaultTLSMinVersion = "1.2"
	// TLSOptionHSTS is the Strict-Transport-Security header the responses
	// of a listener carry (RFC 6797): "max-age=<seconds>", optionally
	// "; includeSubDomains" and "; preload"; unset: none.
	TLSOptionHSTS = "meshgate.dev/hsts"
)

// CipherSuites maps the TLS 1.2 cipher suites a listener may list (their
// OpenSSL names, as Envoy's) to their IANA names. Read only.
var CipherSuites = map[string]string{
	"ECDHE-ECDSA-AES128-GCM-SHA256": "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-RSA-AES128-GCM-SHA256":   "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
	"ECDHE-ECDSA-AES256-GCM-SHA384": "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-RSA-AES256-GCM-SHA384":   "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
	"ECDHE-ECDSA-CHACHA20-POLY1305": "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
	"ECDHE-RSA-CHACHA20-POLY1305":   "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
}

// Secret is a Kubernetes core Secret document. Only type kubernetes.io/tls
// Secrets are used (as the certificates of HTTPS listeners); the others
// are accepted and ignored, so that Kubernetes manifests load as they are.
// Its data is never shown in statuses or logs.
type Secret struct {
	Name        string
	Namespace   string
	Type        string
	Annotations map[string]string
	// Data is data (base64-decoded) merged with stringData, as the API
	// server stores it.
	Data   map[string][]byte
	Source Source
}

// secretDocument is the shape of a Secret document.
type secretDocument struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   documentMeta      `json:"metadata"`
	Type       string            `json:"type,omitempty"`
	Data       map[string]string `json:"data,omitempty"`
	StringData map[string]string `json:"stringData,omitempty"`
	Immutable  *bool             `json:"immutable,omitempty"`
}

// decodeSecret decodes a Secret document: data is base64.
func decodeSecret(_ *kind, d *docEffect, file string, root *yaml.Node) {
	doc, meta, ok := decodeDoc(d, file, root, func(doc *secretDocument) documentMeta { return doc.Metadata })
	if !ok {
		return
	}
	s := &Secret{Name: meta.objectMeta.Name, Namespace: meta.objectMeta.Namespace, Type: cmp.Or(doc.Type, "Opaque"),
		Annotations: meta.objectMeta.Annotations, Data: map[string][]byte{}, Source: meta.source}
	for _, k := range slices.Sorted(maps.Keys(doc.Data)) {
		v, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(doc.Data[k]), ""))
		if err != nil {
			d.errorf(meta.source, mapKeyPath("data", k), "not base64: %v (use stringData for text)", err)
			continue
		}
		s.Data[k] = v
	}
	for k, v := range doc.StringData {
		s.Data[k] = []byte(v)
	}
	d.res, d.meta = s, meta
}

// TLSCertificate is the certificate and private key of a TLS Secret, as
// PEM, checked: they parse, match, and the certificate is valid now.
type TLSCertificate struct {
	// CertPEM is the certificate chain, leaf first.
	CertPEM []byte
	// KeyPEM is the private key. Never logged nor shown.
	KeyPEM []byte
	// NotAfter is when the leaf expires.
	NotAfter time.Time
}

// String names the certificate without its key.
func (c *TLSCertificate) String() string {
	return fmt.Sprintf("certificate (expires %s)", c.NotAfter.UTC().Format(time.RFC3339))
}

// secretCheck is the outcome of checking one Secret as a certificate.
type secretCheck struct {
	cert *TLSCertificate
	err  error // nil when cert is set; already reported on the Secret
}

// validateSecrets checks every TLS Secret's certificate and key.
func (l *loader) validateSecrets(*setIndex) {
	slices.SortFunc(l.set.Secrets, func(a, b *Secret) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	for _, s := range l.set.Secrets {
		if s.Type == SecretTypeTLS && !l.malformed[resourceKey{KindSecret, s.Namespace, s.Name}] {
			l.secretCertificate(s)
		}
	}
}

// secretCertificate checks s (once per pass, reporting its errors) and
// returns its certificate, or the error that makes it unusable.
func (l *loader) secretCertificate(s *Secret) (*TLSCertificate, error) {
	if c := l.pass.secrets[s]; c != nil {
		return c.cert, c.err
	}
	if l.pass.secrets == nil {
		l.pass.secrets = map[*Secret]*secretCheck{}
	}
	c := &secretCheck{}
	c.cert, c.err = l.checkSecret(s)
	l.pass.secrets[s] = c
	if c.cert != nil {
		if l.set.TLSCertificates == nil {
			l.set.TLSCertificates = map[string]*TLSCertificate{}
		}
		l.set.TLSCertificates[cmp.Or(s.Namespace, DefaultNamespace)+"/"+s.Name] = c.cert
	}
	return c.cert, c.err
}

// checkSecret reads and checks the certificate and key of a TLS Secret,
// reporting what is wrong with them on the Secret.
func (l *loader) checkSecret(s *Secret) (*TLSCertificate, error) {
	certField, keyField := mapKeyPath("data", SecretTLSCert), mapKeyPath("data", SecretTLSKey)
	certPEM, keyPEM := s.Data[SecretTLSCert], s.Data[SecretTLSKey]
	certWhere, keyWhere := "", ""
	certFile, keyFile := s.Annotations[AnnotationTLSCertFile], s.Annotations[AnnotationTLSKeyFile]
	fail := func(field, format string, args ...any) (*TLSCertificate, error) {
		err := fmt.Errorf(format, args...)
		l.errorf(s.Source, field, "%v", err)
		return nil, err
	}
	if (certFile == "") != (keyFile == "") {
		return fail("metadata.annotations", "annotations %s and %s go together", AnnotationTLSCertFile, AnnotationTLSKeyFile)
	}
	if certFile != "" {
		if len(certPEM) > 0 || len(keyPEM) > 0 {
			return fail("metadata.annotations", "a Secret with %s has no %s or %s in data", AnnotationTLSCertFile, SecretTLSCert, SecretTLSKey)
		}
		certField, keyField = mapKeyPath("metadata.annotations", AnnotationTLSCertFile), mapKeyPath("metadata.annotations", AnnotationTLSKeyFile)
		var err error
		if certPEM, certWhere, err = readPEMFile(s.Source.File, certFile); err != nil {
			return fail(certField, "%v", err)
		}
		if keyPEM, keyWhere, err = readPEMFile(s.Source.File, keyFile); err != nil {
			return fail(keyField, "%v", err)
		}
	}
	switch {
	case len(certPEM) == 0:
		return fail(certField, "%s is required in a Secret of type %s (data, stringData, or the %s annotation)", SecretTLSCert, SecretTypeTLS, AnnotationTLSCertFile)
	case len(keyPEM) == 0:
		return fail(keyField, "%s is required in a Secret of type %s (data, stringData, or the %s annotation)", SecretTLSKey, SecretTypeTLS, AnnotationTLSKeyFile)
	}
	cert, err := ParseCertificate(certPEM, keyPEM, time.Now())
	if err != nil {
		var ce *CertificateError
		field, where := certField, certWhere
		if errors.As(err, &ce) && ce.Key {
			field, where = keyField, keyWhere
		}
		if where != "" {
			return fail(field, "%s: %v", where, err)
		}
		return fail(field, "%v", err)
	}
	return cert, nil
}

// certificatePath is the path of a PEM file named by a Secret annotation:
// as written when absolute, else relative to the policy file's directory.
func certificatePath(policyFile, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(filepath.Dir(policyFile), name)
}

// CertificateFiles are the PEM files the TLS Secrets of the set name by
// annotation (AnnotationTLSCertFile, AnnotationTLSKeyFile), and the CA
// bundles of ConfigMaps (AnnotationCAFile), sorted: a
// control plane watches them, and reloads the policy when they change.
func (s *Set) CertificateFiles() []string {
	var out []string
	for _, sec := range s.Secrets {
		for _, a := range []string{AnnotationTLSCertFile, AnnotationTLSKeyFile} {
			if name := sec.Annotations[a]; name != "" {
				out = append(out, certificatePath(sec.Source.File, name))
			}
		}
	}
	out = append(out, s.caFiles()...)
	slices.Sort(out)
	return slices.Compact(out)
}

// readPEMFile reads a PEM file named by a Secret annotation, relative to
// the policy file's directory.
func readPEMFile(policyFile, name string) ([]byte, string, error) {
	path := certificatePath(policyFile, name)
	f, err := os.Open(path)
	if err != nil {
		return nil, path, fmt.Errorf("reading %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, maxSecretBytes+1))
	if err != nil {
		return nil, path, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > maxSecretBytes {
		return nil, path, fmt.Errorf("%s is larger than %d bytes", path, maxSecretBytes)
	}
	return data, path, nil
}

// CertificateError is what is wrong with a certificate or its key. Its
// message never holds key material.
type CertificateError struct {
	// Key: the problem is the private key (else the certificate).
	Key bool
	Msg string
}

func (e *CertificateError) Error() string { return e.Msg }

// ParseCertificate checks a PEM certificate chain and private key: both
// PEM, the key the leaf's, the leaf valid at now.
func ParseCertificate(certPEM, keyPEM []byte, now time.Time) (*TLSCertificate, error) {
	var leaf *x509.Certificate
	rest := certPEM
	for n := 0; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			if n == 0 {
				return nil, &CertificateError{Msg: SecretTLSCert + " is not PEM (want -----BEGIN CERTIFICATE-----)"}
			}
			break
		}
		if block.Type != "CERTIFICATE" {
			return nil, &CertificateError{Msg: fmt.Sprintf("%s: PEM block %d is %q, want CERTIFICATE", SecretTLSCert, n+1, block.Type)}
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, &CertificateError{Msg: fmt.Sprintf("%s: certificate %d: %v", SecretTLSCert, n+1, err)}
		}
		if leaf == nil {
			leaf = c
		}
	}
	if block, _ := pem.Decode(keyPEM); block == nil || !strings.Contains(block.Type, "PRIVATE KEY") {
		return nil, &CertificateError{Key: true, Msg: SecretTLSKey + " is not a PEM private key (want -----BEGIN PRIVATE KEY-----, RSA or EC)"}
	}
	if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
		msg := "cannot be used"
		switch {
		case strings.Contains(err.Error(), "does not match"):
			msg = "does not match the certificate's public key"
		case strings.Contains(err.Error(), "failed to parse private key"), strings.Contains(err.Error(), "unknown"):
			msg = "is not a valid private key"
		}
		// The error of crypto/tls holds no key material; it is not
		// repeated anyway.
		return nil, &CertificateError{Key: true, Msg: SecretTLSKey + " " + msg}
	}
	switch {
	case now.After(leaf.NotAfter):
		return nil, &CertificateError{Msg: fmt.Sprintf("%s: the certificate (subject %q) expired at %s", SecretTLSCert, leaf.Subject.String(), leaf.NotAfter.UTC().Format(time.RFC3339))}
	case now.Before(leaf.NotBefore):
		return nil, &CertificateError{Msg: fmt.Sprintf("%s: the certificate (subject %q) is not valid before %s", SecretTLSCert, leaf.Subject.String(), leaf.NotBefore.UTC().Format(time.RFC3339))}
	}
	return &TLSCertificate{CertPEM: certPEM, KeyPEM: keyPEM, NotAfter: leaf.NotAfter}, nil
}

// checkListenerTLS checks the tls of an HTTPS listener of o at path p
// (p ends in ".tls"): mode Terminate, its certificateRefs (Secrets of
// type kubernetes.io/tls, in another namespace only with a
// ReferenceGrant), its options.
func (l *loader) checkListenerTLS(o listenerOwner, i int, p string, t *gwapiv1.ListenerTLSConfig) {
	if t.Mode != nil && *t.Mode != gwapiv1.TLSModeTerminate {
		if *t.Mode == gwapiv1.TLSModePassthrough {
			l.listenerErrorf(o, i, p+".mode", lsInvalid, "mode Passthrough is not supported yet (only Terminate)")
		} else {
			l.listenerErrorf(o, i, p+".mode", lsInvalid, "unknown mode %q (want Terminate)", *t.Mode)
		}
		return
	}
	if _, acme := t.Options[TLSOptionACMEIssuer]; len(t.CertificateRefs) == 0 && !acme {
		l.listenerErrorf(o, i, p+".certificateRefs", string(gwapiv1.ListenerReasonInvalidCertificateRef), "at least one certificateRef is required with mode Terminate")
	}
	ns := o.ownerNamespace()
	for j, ref := range t.CertificateRefs {
		rp := fmt.Sprintf("%s.certificateRefs[%d]", p, j)
		group, kind := "", KindSecret
		if ref.Group != nil {
			group = string(*ref.Group)
		}
		if ref.Kind != nil {
			kind = string(*ref.Kind)
		}
		if (group != "" && group != coreGroupAlias) || kind != KindSecret {
			l.listenerErrorf(o, i, rp, string(gwapiv1.ListenerReasonInvalidCertificateRef), "certificateRef of kind %q in group %q: want a Secret (group \"\")", kind, group)
			continue
		}
		refNS := ns
		if ref.Namespace != nil && *ref.Namespace != "" {
			refNS = string(*ref.Namespace)
		}
		if refNS != ns && !l.set.certificatePermitted(o, refNS, string(ref.Name)) {
			l.listenerErrorf(o, i, rp+".namespace", string(gwapiv1.ListenerReasonRefNotPermitted),
				"Secret %s/%s is in another namespace: it needs a ReferenceGrant in %s from %ss of %s to Secrets", refNS, ref.Name, refNS, ownerKind(o), ns)
			continue
		}
		s := l.set.LookupSecret(refNS, string(ref.Name))
		switch {
		case s == nil && l.pass.rejected[resourceKey{KindSecret, refNS, string(ref.Name)}].File != "":
			src := l.pass.rejected[resourceKey{KindSecret, refNS, string(ref.Name)}]
			l.listenerErrorf(o, i, rp+".name", string(gwapiv1.ListenerReasonInvalidCertificateRef), "Secret %s/%s is invalid (%s:%d)", refNS, ref.Name, src.File, src.Line)
		case s == nil:
			l.listenerErrorf(o, i, rp+".name", string(gwapiv1.ListenerReasonInvalidCertificateRef), "Secret %s/%s does not exist", refNS, ref.Name)
		case s.Type != SecretTypeTLS:
			l.listenerErrorf(o, i, rp+".name", string(gwapiv1.ListenerReasonInvalidCertificateRef), "Secret %s/%s has type %q, want %s", refNS, ref.Name, s.Type, SecretTypeTLS)
		case l.malformed[resourceKey{KindSecret, s.Namespace, s.Name}]:
			l.listenerErrorf(o, i, rp+".name", string(gwapiv1.ListenerReasonInvalidCertificateRef), "Secret %s/%s is malformed (%s:%d)", refNS, ref.Name, s.Source.File, s.Source.Line)
		default:
			if _, err := l.secretCertificate(s); err != nil {
				l.listenerErrorf(o, i, rp+".name", string(gwapiv1.ListenerReasonInvalidCertificateRef), "Secret %s/%s (%s:%d): %v", refNS, ref.Name, s.Source.File, s.Source.Line, err)
			}
		}
	}
	for _, k := range slices.Sorted(maps.Keys(t.Options)) {
		v := string(t.Options[k])
		kp := mapKeyPath(p+".options", string(k))
		switch string(k) {
		case TLSOptionMinVersion:
			if v != "1.2" && v != "1.3" {
				l.listenerErrorf(o, i, kp, lsInvalid, "unknown TLS version %q (want 1.2 or 1.3)", v)
			}
		case TLSOptionCipherSuites:
			for c := range strings.SplitSeq(v, ",") {
				if _, ok := CipherSuites[strings.TrimSpace(c)]; !ok {
					l.listenerErrorf(o, i, kp, lsInvalid, "unknown or insecure cipher suite %q (want some of %s)", strings.TrimSpace(c), strings.Join(slices.Sorted(maps.Keys(CipherSuites)), ", "))
				}
			}
		case TLSOptionACMEIssuer: // checkListenerACME
		case TLSOptionHSTS:
			if msg := CheckHSTS(v); msg != "" {
				l.listenerErrorf(o, i, kp, lsInvalid, "invalid Strict-Transport-Security value %q: %s", v, msg)
			}
		default:
			l.listenerErrorf(o, i, kp, lsInvalid, "unknown option %q (want %s, %s, %s or %s)", k, TLSOptionMinVersion, TLSOptionCipherSuites, TLSOptionHSTS, TLSOptionACMEIssuer)
		}
	}
}

// ownerKind is the kind of a listener owner.
func ownerKind(o listenerOwner) string {
	if _, ok := o.(*ListenerSet); ok {
		return KindListenerSet
	}
	return KindGateway
}

// certificatePermitted reports whether a listener of o may use the Secret
// namespace/name of another namespace: with a ReferenceGrant there from
// o's kind in o's namespace to that Secret (or every Secret).
func (s *Set) certificatePermitted(o listenerOwner, namespace, name string) bool {
	from, kind := o.ownerNamespace(), ownerKind(o)
	for _, g := range s.ReferenceGrants {
		if cmp.Or(g.Namespace, DefaultNamespace) != namespace {
			continue
		}
		okFrom := slices.ContainsFunc(g.Spec.From, func(f gwapiv1.ReferenceGrantFrom) bool {
			return string(f.Group) == GatewayGroup && string(f.Kind) == kind && string(f.Namespace) == from
		})
		okTo := slices.ContainsFunc(g.Spec.To, func(t gwapiv1.ReferenceGrantTo) bool {
			group := string(t.Group)
			return (group == "" || group == coreGroupAlias) && string(t.Kind) == KindSecret && (t.Name == nil || string(*t.Name) == name)
		})
		if okFrom && okTo {
			return true
		}
	}
	return false
}

// LookupSecret returns the Secret namespace/name, or nil.
func (s *Set) LookupSecret(namespace, name string) *Secret {
	namespace = cmp.Or(namespace, DefaultNamespace)
	for _, sec := range s.Secrets {
		if cmp.Or(sec.Namespace, DefaultNamespace) == namespace && sec.Name == name {
			return sec
		}
	}
	return nil
}

// NamedCertificate is a checked certificate and the Secret it is from,
// "namespace/name".
type NamedCertificate struct {
	Secret string
	*TLSCertificate
}

// ListenerCertificates are the checked certificates of a listener's
// certificateRefs, in order, resolved in the namespace of its owner
// (ownerNamespace); nil when it has none or one is not usable.
func (s *Set) ListenerCertificates(ownerNamespace string, ls *gwapiv1.Listener) []NamedCertificate {
	if ls.TLS == nil {
		return nil
	}
	var out []NamedCertificate
	for _, ref := range ls.TLS.CertificateRefs {
		ns := cmp.Or(ownerNamespace, DefaultNamespace)
		if ref.Namespace != nil && *ref.Namespace != "" {
			ns = string(*ref.Namespace)
		}
		c := s.TLSCertificates[ns+"/"+string(ref.Name)]
		if c == nil {
			return nil
		}
		out = append(out, NamedCertificate{Secret: ns + "/" + string(ref.Name), TLSCertificate: c})
	}
	return out
}

// CheckHSTS returns why v is not a Strict-Transport-Security value meshgate
// sends (RFC 6797: max-age=<seconds>, required, then includeSubDomains and
// preload, each at most once, separated by ";"), or "".
func CheckHSTS(v string) string {
	seen := map[string]bool{}
	for d := range strings.SplitSeq(v, ";") {
		d = strings.TrimSpace(d)
		name, value, hasValue := strings.Cut(d, "=")
		key := strings.ToLower(strings.TrimSpace(name))
		switch {
		case d == "":
			return "empty directive"
		case seen[key]:
			return fmt.Sprintf("directive %s repeated", name)
		case key == "max-age":
			value = strings.Trim(strings.TrimSpace(value), `"`)
			if !hasValue || value == "" || strings.Trim(value, "0123456789") != "" || len(value) > 10 {
				return "max-age wants a number of seconds (max-age=31536000)"
			}
		case key == "includesubdomains" || key == "preload":
			if hasValue {
				return fmt.Sprintf("directive %s takes no value", name)
			}
		default:
			return fmt.Sprintf("unknown directive %q (want max-age, includeSubDomains, preload)", name)
		}
		seen[key] = true
	}
	if !seen["max-age"] {
		return "max-age is required (max-age=31536000)"
	}
	return ""
}
