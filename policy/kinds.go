package policy

import (
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

// kind is one kind of resource a policy holds. Adding a kind is adding its
// entry to kinds (and its compile step to controlplane/model, whose tests
// require one for every kind listed here): how a document of the kind
// decodes into its resource, where a registered resource goes in the Set,
// and how the kind's resources are validated against the whole set.
type kind struct {
	// name is the kind as written in documents; apiVersion its version
	// (the one resources are shown with), olderVersions the other versions
	// accepted for it (gateway.networking.k8s.io/v1beta1 for the kinds
	// that exist in v1: the CRDs still serve it, with the same fields).
	name, apiVersion string
	olderVersions    []string
	// clusterScoped kinds have no namespace (metadata.namespace is
	// ignored): GatewayClass, Namespace.
	clusterScoped bool
	// aliases are the other names a user may type for the kind on the
	// command line (lower case: plurals, short names).
	aliases []string
	// decode decodes one document of the kind into d: its resource and
	// identity (d.res, d.meta), and what is wrong with it. It depends on
	// nothing but its arguments: a Cache reuses what it made.
	decode func(k *kind, d *docEffect, file string, root *yaml.Node)
	// add puts a registered resource of the kind into the set being loaded.
	add func(l *loader, res any)
	// validate checks the kind's resources once every document is in,
	// against the whole set (ix); errors are reported through l.
	validate func(l *loader, ix *setIndex)
}

// kinds are the kinds a policy holds, in the order they are listed to
// users (and validated: the order does not change what is reported, as
// errors are sorted by file and line). Read only.
var kinds = [...]kind{
	{
		name: KindGateway, apiVersion: GatewayAPIVersion, olderVersions: []string{GatewayAPIV1beta1}, aliases: []string{"gateways", "gw"},
		decode: decodeKind(func(k *kind, spec gwapiv1.GatewaySpec, meta decodedMeta) any {
			return &Gateway{Gateway: gwapiv1.Gateway{
				TypeMeta:   metav1.TypeMeta{APIVersion: k.apiVersion, Kind: k.name},
				ObjectMeta: meta.objectMeta,
				Spec:       spec,
			}, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.set.Gateways = append(l.set.Gateways, res.(*Gateway)) },
		validate: (*loader).validateGateways,
	},
	{
		name: KindHTTPRoute, apiVersion: GatewayAPIVersion, olderVersions: []string{GatewayAPIV1beta1}, aliases: []string{"httproutes"},
		decode: decodeKind(func(k *kind, spec gwapiv1.HTTPRouteSpec, meta decodedMeta) any {
			return &HTTPRoute{HTTPRoute: gwapiv1.HTTPRoute{
				TypeMeta:   metav1.TypeMeta{APIVersion: k.apiVersion, Kind: k.name},
				ObjectMeta: meta.objectMeta,
				Spec:       spec,
			}, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.set.HTTPRoutes = append(l.set.HTTPRoutes, res.(*HTTPRoute)) },
		validate: (*loader).validateHTTPRoutes,
	},
	{
		// Held in Set.HTTPRoutes and validated with them (see
		// KindGRPCRoute).
		name: KindGRPCRoute, apiVersion: GatewayAPIVersion, aliases: []string{"grpcroutes"},
		decode:   decodeKind(newGRPCRoute),
		add:      func(l *loader, res any) { l.set.HTTPRoutes = append(l.set.HTTPRoutes, res.(*HTTPRoute)) },
		validate: func(*loader, *setIndex) {},
	},
	{
		name: KindService, apiVersion: MeshgateAPIVersion, aliases: []string{"services", "svc"},
		decode: decodeKind(func(_ *kind, spec ServiceSpec, meta decodedMeta) any {
			// The default protocol is written here, at decoding, as
			// validation (checkService, skipped for malformed resources)
			// wrote it before: a decoded resource is never modified
			// afterwards, because a Cache shares it between loads.
			for i := range spec.Ports {
				if !meta.malformed && spec.Ports[i].Protocol == "" {
					spec.Ports[i].Protocol = ProtocolHTTP
				}
			}
			return &Service{Name: meta.objectMeta.Name, Namespace: meta.objectMeta.Namespace, Annotations: meta.objectMeta.Annotations, Spec: spec, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.set.Services = append(l.set.Services, res.(*Service)) },
		validate: (*loader).validateServices,
	},
	{
		name: KindSecurityPolicy, apiVersion: MeshgateAPIVersion, aliases: []string{"securitypolicies"},
		decode: decodeKind(func(_ *kind, spec SecurityPolicySpec, meta decodedMeta) any {
			return &SecurityPolicy{Name: meta.objectMeta.Name, Namespace: meta.objectMeta.Namespace, Annotations: meta.objectMeta.Annotations, Spec: spec, Source: meta.source}
		}),
		add: func(l *loader, res any) {
			l.set.SecurityPolicies = append(l.set.SecurityPolicies, res.(*SecurityPolicy))
		},
		validate: (*loader).validateSecurityPolicies,
	},
	{
		name: KindTrafficPolicy, apiVersion: MeshgateAPIVersion, aliases: []string{"trafficpolicies", "tp"},
		decode: decodeKind(func(_ *kind, spec TrafficPolicySpec, meta decodedMeta) any {
			return &TrafficPolicy{Name: meta.objectMeta.Name, Namespace: meta.objectMeta.Namespace, Spec: spec, Source: meta.source}
		}),
		add: func(l *loader, res any) {
			l.set.TrafficPolicies = append(l.set.TrafficPolicies, res.(*TrafficPolicy))
		},
		validate: (*loader).validateTrafficPolicies,
	},
	{
		name: KindMeshConfig, apiVersion: MeshgateAPIVersion, aliases: []string{"meshconfigs"},
		decode: decodeKind(func(_ *kind, spec MeshConfigSpec, meta decodedMeta) any {
			return &MeshConfig{Name: meta.objectMeta.Name, Namespace: meta.objectMeta.Namespace, Spec: spec, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.meshConfigs = append(l.meshConfigs, res.(*MeshConfig)) },
		validate: (*loader).validateMeshConfigs,
	},
	{
		name: KindGatewayClass, apiVersion: GatewayAPIVersion, olderVersions: []string{GatewayAPIV1beta1}, clusterScoped: true,
		aliases: []string{"gatewayclasses", "gc"},
		decode: decodeKind(func(k *kind, spec gwapiv1.GatewayClassSpec, meta decodedMeta) any {
			return &GatewayClass{GatewayClass: gwapiv1.GatewayClass{
				TypeMeta:   metav1.TypeMeta{APIVersion: k.apiVersion, Kind: k.name},
				ObjectMeta: meta.objectMeta,
				Spec:       spec,
			}, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.set.GatewayClasses = append(l.set.GatewayClasses, res.(*GatewayClass)) },
		validate: (*loader).validateGatewayClasses,
	},
	{
		name: KindReferenceGrant, apiVersion: GatewayAPIVersion, olderVersions: []string{GatewayAPIV1beta1},
		aliases: []string{"referencegrants", "refgrant"},
		decode: decodeKind(func(k *kind, spec gwapiv1.ReferenceGrantSpec, meta decodedMeta) any {
			return &ReferenceGrant{ReferenceGrant: gwapiv1.ReferenceGrant{
				TypeMeta:   metav1.TypeMeta{APIVersion: k.apiVersion, Kind: k.name},
				ObjectMeta: meta.objectMeta,
				Spec:       spec,
			}, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.set.ReferenceGrants = append(l.set.ReferenceGrants, res.(*ReferenceGrant)) },
		validate: (*loader).validateReferenceGrants,
	},
	{
		name: KindNamespace, apiVersion: CoreAPIVersion, clusterScoped: true, aliases: []string{"namespaces", "ns"},
		decode: decodeKind(func(_ *kind, spec NamespaceSpec, meta decodedMeta) any {
			return &Namespace{Name: meta.objectMeta.Name, Labels: meta.objectMeta.Labels, Spec: spec, Source: meta.source}
		}),
		add: func(l *loader, res any) { l.set.Namespaces = append(l.set.Namespaces, res.(*Namespace)) },
		validate: func(l *loader, _ *setIndex) {
			slices.SortFunc(l.set.Namespaces, func(a, b *Namespace) int { return strings.Compare(a.Name, b.Name) })
		},
	},
	{
		// Validated with the Gateways (validateGateways), before the
		// routes that attach to their listeners.
		name: KindListenerSet, apiVersion: GatewayAPIVersion, aliases: []string{"listenersets", "lset"},
		decode: decodeKind(func(k *kind, spec gwapiv1.ListenerSetSpec, meta decodedMeta) any {
			return &ListenerSet{ListenerSet: gwapiv1.ListenerSet{
				TypeMeta:   metav1.TypeMeta{APIVersion: k.apiVersion, Kind: k.name},
				ObjectMeta: meta.objectMeta,
				Spec:       spec,
			}, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.set.ListenerSets = append(l.set.ListenerSets, res.(*ListenerSet)) },
		validate: func(*loader, *setIndex) {},
	},
	{
		// The certificates of HTTPS listeners (type kubernetes.io/tls);
		// checked when listeners reference them, and here.
		name: KindSecret, apiVersion: CoreAPIVersion, aliases: []string{"secrets"},
		decode:   decodeSecret,
		add:      func(l *loader, res any) { l.set.Secrets = append(l.set.Secrets, res.(*Secret)) },
		validate: (*loader).validateSecrets,
	},
	{
		// The ACME CAs of HTTPS listeners without certificateRefs
		// (TLSOptionACMEIssuer); listeners are checked against them with
		// the Gateways.
		name: KindACMEIssuer, apiVersion: MeshgateAPIVersion, aliases: []string{"acmeissuers"},
		decode: decodeKind(func(_ *kind, spec ACMEIssuerSpec, meta decodedMeta) any {
			return &ACMEIssuer{Name: meta.objectMeta.Name, Namespace: meta.objectMeta.Namespace, Spec: spec, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.set.ACMEIssuers = append(l.set.ACMEIssuers, res.(*ACMEIssuer)) },
		validate: (*loader).validateACMEIssuers,
	},
	{
		name: KindBackendTLSPolicy, apiVersion: GatewayAPIVersion, aliases: []string{"backendtlspolicies", "btlspolicy"},
		decode: decodeKind(func(k *kind, spec gwapiv1.BackendTLSPolicySpec, meta decodedMeta) any {
			return &BackendTLSPolicy{BackendTLSPolicy: gwapiv1.BackendTLSPolicy{
				TypeMeta:   metav1.TypeMeta{APIVersion: k.apiVersion, Kind: k.name},
				ObjectMeta: meta.objectMeta,
				Spec:       spec,
			}, Source: meta.source}
		}),
		add: func(l *loader, res any) {
			l.set.BackendTLSPolicies = append(l.set.BackendTLSPolicies, res.(*BackendTLSPolicy))
		},
		validate: (*loader).validateBackendTLSPolicies,
	},
	{
		// The CA bundles of BackendTLSPolicies (ca.crt); checked when a
		// policy references them.
		name: KindConfigMap, apiVersion: CoreAPIVersion, aliases: []string{"configmaps", "cm"},
		decode:   decodeConfigMap,
		add:      func(l *loader, res any) { l.set.ConfigMaps = append(l.set.ConfigMaps, res.(*ConfigMap)) },
		validate: func(*loader, *setIndex) {},
	},
	// L4 routes (l4route.go), validated after the Gateways.
	{
		name: KindTCPRoute, apiVersion: GatewayAPIVersion, olderVersions: []string{GatewayAPIV1alpha2}, aliases: []string{"tcproutes"},
		decode: decodeKind(func(k *kind, spec gwapiv1.TCPRouteSpec, meta decodedMeta) any {
			return &TCPRoute{TCPRoute: gwapiv1.TCPRoute{
				TypeMeta:   metav1.TypeMeta{APIVersion: k.apiVersion, Kind: k.name},
				ObjectMeta: meta.objectMeta,
				Spec:       spec,
			}, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.set.TCPRoutes = append(l.set.TCPRoutes, res.(*TCPRoute)) },
		validate: (*loader).validateTCPRoutes,
	},
	{
		name: KindTLSRoute, apiVersion: GatewayAPIVersion, olderVersions: []string{GatewayAPIV1alpha2, GatewayAPIV1alpha3}, aliases: []string{"tlsroutes"},
		decode: decodeKind(func(k *kind, spec gwapiv1.TLSRouteSpec, meta decodedMeta) any {
			return &TLSRoute{TLSRoute: gwapiv1.TLSRoute{
				TypeMeta:   metav1.TypeMeta{APIVersion: k.apiVersion, Kind: k.name},
				ObjectMeta: meta.objectMeta,
				Spec:       spec,
			}, Source: meta.source}
		}),
		add:      func(l *loader, res any) { l.set.TLSRoutes = append(l.set.TLSRoutes, res.(*TLSRoute)) },
		validate: (*loader).validateTLSRoutes,
	},
}

// notSupportedYet are the kinds of the Gateway API and of meshgate that
// this version recognises but does not implement yet, by API group: a
// document of one is refused with "kind X is not supported yet" rather than
// as an unknown kind. A kind that gets implemented moves from here to kinds.
var notSupportedYet = map[string][]string{
	GatewayGroup: {"UDPRoute"},
}

// decodeKind returns the decode function of a kind whose spec is S: the
// document is checked against S and build makes the resource.
func decodeKind[S any](build func(k *kind, spec S, meta decodedMeta) any) func(*kind, *docEffect, string, *yaml.Node) {
	return func(k *kind, d *docEffect, file string, root *yaml.Node) {
		doc, meta, ok := decodeSpec[S](d, file, root)
		if !ok {
			return
		}
		if k.clusterScoped {
			meta.key.namespace, meta.objectMeta.Namespace = "", ""
		}
		d.res, d.meta = build(k, doc.Spec, meta), meta
	}
}

// kindNamed returns the entry of a kind as written in documents, or nil.
func kindNamed(name string) *kind {
	for i := range kinds {
		if kinds[i].name == name {
			return &kinds[i]
		}
	}
	return nil
}

// kindNotSupportedYet reports kinds this version recognises but does not
// implement yet.
func kindNotSupportedYet(group, kind string) bool {
	return slices.Contains(notSupportedYet[group], kind)
}

// Kinds lists the kinds a policy may hold, as written in documents.
func Kinds() []string {
	out := make([]string, len(kinds))
	for i := range kinds {
		out[i] = kinds[i].name
	}
	return out
}

// ClusterScoped reports whether a kind (as written in documents) has no
// namespace: GatewayClass, Namespace.
func ClusterScoped(kindName string) bool {
	k := kindNamed(kindName)
	return k != nil && k.clusterScoped
}

// LookupKind maps a kind as a user may type it (any case, singular,
// plural or short name: "svc", "httproutes") to its name in documents.
func LookupKind(name string) (string, bool) {
	lower := strings.ToLower(name)
	for i := range kinds {
		if strings.ToLower(kinds[i].name) == lower || slices.Contains(kinds[i].aliases, lower) {
			return kinds[i].name, true
		}
	}
	return "", false
}

// KindsText lists the kinds for a message: "Gateway, HTTPRoute, ... or
// MeshConfig".
func KindsText() string { return orList(Kinds()) }

// wantedKinds lists the kinds by API version for the message about an
// unknown kind: "Gateway or HTTPRoute in gateway.networking.k8s.io/v1;
// Service, ... in meshgate.dev/v1alpha1".
func wantedKinds() string {
	var versions []string
	byVersion := map[string][]string{}
	for i := range kinds {
		v := kinds[i].apiVersion
		if _, ok := byVersion[v]; !ok {
			versions = append(versions, v)
		}
		byVersion[v] = append(byVersion[v], kinds[i].name)
	}
	parts := make([]string, 0, len(versions))
	for _, v := range versions {
		parts = append(parts, orList(byVersion[v])+" in "+v)
	}
	return strings.Join(parts, "; ")
}

// orList joins names as "a, b or c".
func orList(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

// setIndex is what validation looks resources up in, built once the set is
// complete.
type setIndex struct {
	gateways     map[nsName]*Gateway
	listenerSets map[nsName]*ListenerSet
	services     map[nsName]*Service
	routes       map[nsName]bool
	// httpRouteNames are the routes written as HTTPRoutes (not GRPCRoutes).
	httpRouteNames map[nsName]bool
}
