package policy

import (
	"cmp"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"

	"go.yaml.in/yaml/v3"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// Kinds of TLS to backends outside the mesh.
const (
	// KindBackendTLSPolicy (Gateway API) makes the calls to a Service's
	// endpoints TLS, verified against a CA bundle and a hostname.
	KindBackendTLSPolicy = "BackendTLSPolicy"
	// KindConfigMap is Kubernetes' core ConfigMap (apiVersion v1): the CA
	// bundle of a BackendTLSPolicy, under the key ca.crt.
	KindConfigMap = "ConfigMap"
)

// ConfigMap keys and annotations of a CA bundle.
const (
	// ConfigMapCAKey holds a PEM CA bundle, as Kubernetes has it.
	ConfigMapCAKey = "ca.crt"
	// AnnotationCAFile names a PEM CA bundle file on the control plane's
	// disk instead of ca.crt: absolute, or relative to the policy file's
	// directory; read at every load, and watched.
	AnnotationCAFile = "meshgate.dev/ca-file"
)

// ConfigMap is a Kubernetes core ConfigMap document. Only the ConfigMaps a
// BackendTLSPolicy names are used (their ca.crt); the others are accepted
// and ignored, so that Kubernetes manifests load as they are.
type ConfigMap struct {
	Name        string
	Namespace   string
	Annotations map[string]string
	Data        map[string]string
	Source      Source
}

// configMapDocument is the shape of a ConfigMap document.
type configMapDocument struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Metadata   documentMeta      `json:"metadata"`
	Data       map[string]string `json:"data,omitempty"`
	BinaryData map[string]string `json:"binaryData,omitempty"`
	Immutable  *bool             `json:"immutable,omitempty"`
}

// decodeConfigMap decodes a ConfigMap document (binaryData is ignored).
func decodeConfigMap(_ *kind, d *docEffect, file string, root *yaml.Node) {
	doc, meta, ok := decodeDoc(d, file, root, func(doc *configMapDocument) documentMeta { return doc.Metadata })
	if !ok {
		return
	}
	d.res, d.meta = &ConfigMap{Name: meta.objectMeta.Name, Namespace: meta.objectMeta.Namespace,
		Annotations: meta.objectMeta.Annotations, Data: doc.Data, Source: meta.source}, meta
}

// BackendTLSPolicy is a Gateway API BackendTLSPolicy with the place it was
// loaded from: the calls to its target Services (every port, or the one
// its sectionName names) are TLS, the backend verified against its CA
// bundle and hostname (or subjectAltNames).
type BackendTLSPolicy struct {
	gwapiv1.BackendTLSPolicy
	Source Source
}

// BackendTLS is what a BackendTLSPolicy asks of the connections to a
// service port, resolved (Set.BackendTLSFor).
type BackendTLS struct {
	// Policy is the BackendTLSPolicy, "namespace/name".
	Policy string
	// Hostname is the SNI, and the name verified when SubjectAltNames is
	// empty.
	Hostname string
	// SubjectAltNames are the names one of which the backend's
	// certificate must have.
	SubjectAltNames []SubjectAltName
	// CAPEM is the CA bundle (PEM) of the valid caCertificateRefs; System
	// says the system's trusted CAs instead. Neither: no caCertificateRef
	// is valid, and the connections must fail.
	CAPEM  []byte
	System bool
}

// SubjectAltName is a name a backend certificate is verified against:
// Type is gwapiv1.HostnameSubjectAltNameType or URISubjectAltNameType.
type SubjectAltName struct {
	Type  string
	Value string
}

// validateBackendTLSPolicies checks the BackendTLSPolicies, in precedence
// order (namespace, then name: policy files have no creation time): one
// whose target (and sectionName) an earlier one has is Conflicted.
func (l *loader) validateBackendTLSPolicies(ix *setIndex) {
	slices.SortFunc(l.set.BackendTLSPolicies, func(a, b *BackendTLSPolicy) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	slices.SortFunc(l.set.ConfigMaps, func(a, b *ConfigMap) int {
		return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	taken := map[string]string{}
	for _, p := range l.set.BackendTLSPolicies {
		if l.malformed[resourceKey{KindBackendTLSPolicy, p.Namespace, p.Name}] {
			continue
		}
		l.checkBackendTLSPolicy(p, ix, taken)
	}
}

func (l *loader) checkBackendTLSPolicy(p *BackendTLSPolicy, ix *setIndex, taken map[string]string) {
	src, spec := p.Source, &p.Spec
	ns := cmp.Or(p.Namespace, DefaultNamespace)
	if len(spec.TargetRefs) == 0 {
		l.errorf(src, "spec.targetRefs", "at least one targetRef is required (a Service)")
	}
	var mine []string
	for i, ref := range spec.TargetRefs {
		path := fmt.Sprintf("spec.targetRefs[%d]", i)
		group := string(ref.Group)
		if ref.Kind != KindService || (group != "" && group != coreGroupAlias && group != MeshgateGroup) {
			l.errorf(src, path+".kind", "target %s in group %q is not supported (want a Service, group \"\")", ref.Kind, group)
			continue
		}
		section := ""
		if ref.SectionName != nil {
			section = string(*ref.SectionName)
		}
		key := ns + "/" + string(ref.Name) + "/" + section
		if slices.Contains(mine, key) {
			l.errorf(src, path, "duplicate target Service %q%s", ref.Name, sectionText(section))
			continue
		}
		mine = append(mine, key)
		if other, ok := taken[key]; ok {
			l.classifiedf(src, path, attribution{reason: string(gwapiv1.PolicyReasonConflicted)},
				"Service %q%s already has BackendTLSPolicy %s, which takes precedence (the first by namespace/name)", ref.Name, sectionText(section), other)
			continue
		}
		svc := ix.services[nsName{ns, string(ref.Name)}]
		if svc == nil {
			l.refErrorf(src, path+".name", ReasonTargetNotFound, "service %q not found in namespace %q%s", ref.Name, ns, l.rejectedNote(KindService, ns, string(ref.Name)))
			continue
		}
		if section != "" && !slices.ContainsFunc(svc.Spec.Ports, func(sp ServicePort) bool {
			return sp.Name == section || strconv.Itoa(int(sp.Port)) == section
		}) {
			l.refErrorf(src, path+".sectionName", ReasonTargetNotFound, "service %q has no port named %q", ref.Name, section)
		}
	}
	for _, key := range mine {
		if _, ok := taken[key]; !ok {
			taken[key] = ns + "/" + p.Name
		}
	}

	v := &spec.Validation
	if msg := checkHostname(string(v.Hostname), false); msg != "" {
		l.errorf(src, "spec.validation.hostname", "invalid hostname %q: %s", v.Hostname, msg)
	}
	for i, san := range v.SubjectAltNames {
		path := fmt.Sprintf("spec.validation.subjectAltNames[%d]", i)
		switch san.Type {
		case gwapiv1.HostnameSubjectAltNameType:
			if msg := checkHostname(string(san.Hostname), true); msg != "" {
				l.errorf(src, path+".hostname", "invalid hostname %q: %s", san.Hostname, msg)
			}
		case gwapiv1.URISubjectAltNameType:
			if u, err := url.Parse(string(san.URI)); err != nil || u.Scheme == "" || (u.Opaque == "" && u.Host == "" && u.Path == "") {
				l.errorf(src, path+".uri", "invalid URI %q: want an absolute URI (spiffe://trust.domain/ns/a/sa/b)", san.URI)
			}
		default:
			l.errorf(src, path+".type", "unknown type %q (want Hostname or URI)", san.Type)
		}
	}
	for _, k := range slices.Sorted(maps.Keys(spec.Options)) {
		l.errorf(src, mapKeyPath("spec.options", string(k)), "unknown option %q (meshgate has none for BackendTLSPolicy)", k)
	}

	switch {
	case len(v.CACertificateRefs) > 0 && v.WellKnownCACertificates != nil && *v.WellKnownCACertificates != "":
		l.errorf(src, "spec.validation", "caCertificateRefs and wellKnownCACertificates go alone: set one")
		return
	case v.WellKnownCACertificates != nil && *v.WellKnownCACertificates != "":
		if *v.WellKnownCACertificates != gwapiv1.WellKnownCACertificatesSystem {
			l.errorf(src, "spec.validation.wellKnownCACertificates", "unknown value %q (want System)", *v.WellKnownCACertificates)
		}
		return
	case len(v.CACertificateRefs) == 0:
		l.errorf(src, "spec.validation", "caCertificateRefs or wellKnownCACertificates: System is required")
		return
	}
	var bundle []byte
	for i, ref := range v.CACertificateRefs {
		path := fmt.Sprintf("spec.validation.caCertificateRefs[%d]", i)
		group := string(ref.Group)
		if ref.Kind != KindConfigMap || (group != "" && group != coreGroupAlias) {
			l.refErrorf(src, path+".kind", string(gwapiv1.BackendTLSPolicyReasonInvalidKind), "caCertificateRef of kind %q in group %q: want a ConfigMap (group \"\")", ref.Kind, group)
			continue
		}
		pemBytes, err := l.configMapCA(ns, string(ref.Name))
		if err != nil {
			l.refErrorf(src, path+".name", string(gwapiv1.BackendTLSPolicyReasonInvalidCACertificateRef), "ConfigMap %s/%s: %v", ns, ref.Name, err)
			continue
		}
		bundle = append(bundle, pemBytes...)
	}
	if len(bundle) > 0 {
		if l.set.BackendCAs == nil {
			l.set.BackendCAs = map[string][]byte{}
		}
		l.set.BackendCAs[ns+"/"+p.Name] = bundle
	}
}

func sectionText(section string) string {
	if section == "" {
		return ""
	}
	return " port " + strconv.Quote(section)
}

// configMapCA reads and checks the CA bundle of the ConfigMap ns/name.
func (l *loader) configMapCA(ns, name string) ([]byte, error) {
	var cm *ConfigMap
	for _, c := range l.set.ConfigMaps {
		if c.Namespace == ns && c.Name == name {
			cm = c
		}
	}
	switch {
	case cm == nil:
		return nil, fmt.Errorf("does not exist")
	case l.malformed[resourceKey{KindConfigMap, ns, name}]:
		return nil, fmt.Errorf("is malformed (%s:%d)", cm.Source.File, cm.Source.Line)
	}
	data := []byte(cm.Data[ConfigMapCAKey])
	where := ConfigMapCAKey
	if file := cm.Annotations[AnnotationCAFile]; file != "" {
		if len(data) > 0 {
			return nil, fmt.Errorf("has both %s and the %s annotation: set one", ConfigMapCAKey, AnnotationCAFile)
		}
		var err error
		if data, where, err = readPEMFile(cm.Source.File, file); err != nil {
			return nil, err
		}
	}
	if len(data) == 0 {
		return nil, fmt.Errorf("has no %s (nor a %s annotation)", ConfigMapCAKey, AnnotationCAFile)
	}
	if err := checkCABundle(data); err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return data, nil
}

// checkCABundle checks that data is PEM CERTIFICATE blocks, at least one.
func checkCABundle(data []byte) error {
	n := 0
	for rest := data; ; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("PEM block %d is %q, want CERTIFICATE", n+1, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("certificate %d: %w", n+1, err)
		}
	}
	if n == 0 {
		return fmt.Errorf("not PEM (want -----BEGIN CERTIFICATE-----)")
	}
	return nil
}

// BackendTLSFor is the BackendTLSPolicy of the service port (its name,
// number) of the Service namespace/name, resolved: the one whose
// sectionName names the port, else the one without a sectionName; nil
// when none.
func (s *Set) BackendTLSFor(namespace, service, portName string, portNumber int32) *BackendTLS {
	namespace = cmp.Or(namespace, DefaultNamespace)
	var whole, section *BackendTLSPolicy
	for _, p := range s.BackendTLSPolicies {
		if cmp.Or(p.Namespace, DefaultNamespace) != namespace {
			continue
		}
		for _, ref := range p.Spec.TargetRefs {
			if ref.Kind != KindService || string(ref.Name) != service {
				continue
			}
			switch {
			case ref.SectionName == nil || *ref.SectionName == "":
				if whole == nil {
					whole = p
				}
			case string(*ref.SectionName) == portName || string(*ref.SectionName) == strconv.Itoa(int(portNumber)):
				if section == nil {
					section = p
				}
			}
		}
	}
	p := cmp.Or(section, whole)
	if p == nil {
		return nil
	}
	v := p.Spec.Validation
	out := &BackendTLS{Policy: namespace + "/" + p.Name, Hostname: string(v.Hostname),
		CAPEM:  s.BackendCAs[namespace+"/"+p.Name],
		System: v.WellKnownCACertificates != nil && *v.WellKnownCACertificates == gwapiv1.WellKnownCACertificatesSystem}
	for _, san := range v.SubjectAltNames {
		value := string(san.Hostname)
		if san.Type == gwapiv1.URISubjectAltNameType {
			value = string(san.URI)
		}
		out.SubjectAltNames = append(out.SubjectAltNames, SubjectAltName{Type: string(san.Type), Value: value})
	}
	return out
}

// caFiles are the PEM files the ConfigMaps of the set name by annotation
// (AnnotationCAFile), sorted.
func (s *Set) caFiles() []string {
	var out []string
	for _, cm := range s.ConfigMaps {
		if name := cm.Annotations[AnnotationCAFile]; name != "" {
			out = append(out, certificatePath(cm.Source.File, name))
		}
	}
	return out
}

// backendTLSAncestors are the Gateways of the routes that send to a target
// Service of p: the ancestors of its status.
func (s *Set) backendTLSAncestors(p *BackendTLSPolicy) []gwapiv1.ParentReference {
	ns := cmp.Or(p.Namespace, DefaultNamespace)
	targets := map[string]bool{}
	for _, ref := range p.Spec.TargetRefs {
		if ref.Kind == KindService {
			targets[string(ref.Name)] = true
		}
	}
	var out []gwapiv1.ParentReference
	seen := map[string]bool{}
	for _, r := range s.HTTPRoutes {
		rns := cmp.Or(r.Namespace, DefaultNamespace)
		sends := false
		for _, rule := range r.Spec.Rules {
			for _, br := range rule.BackendRefs {
				bns := rns
				if br.Namespace != nil && *br.Namespace != "" {
					bns = string(*br.Namespace)
				}
				if (br.Kind == nil || *br.Kind == KindService) && bns == ns && targets[string(br.Name)] {
					sends = true
				}
			}
		}
		if !sends {
			continue
		}
		for _, pr := range r.Spec.ParentRefs {
			if pr.Kind != nil && *pr.Kind != KindGateway {
				continue
			}
			pns := rns
			if pr.Namespace != nil && *pr.Namespace != "" {
				pns = string(*pr.Namespace)
			}
			key := pns + "/" + string(pr.Name)
			if seen[key] {
				continue
			}
			seen[key] = true
			out = append(out, gwapiv1.ParentReference{Group: ptrTo(gwapiv1.Group(GatewayGroup)), Kind: ptrTo(gwapiv1.Kind(KindGateway)),
				Namespace: ptrTo(gwapiv1.Namespace(pns)), Name: pr.Name})
		}
	}
	slices.SortFunc(out, func(a, b gwapiv1.ParentReference) int {
		return cmp.Or(cmp.Compare(*a.Namespace, *b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	return out
}

// backendTLSNoValidCA reports whether the policy names caCertificateRefs
// none of which is valid.
func (s *Set) backendTLSNoValidCA(p *BackendTLSPolicy) bool {
	return len(p.Spec.Validation.CACertificateRefs) > 0 && len(s.BackendCAs[cmp.Or(p.Namespace, DefaultNamespace)+"/"+p.Name]) == 0
}
