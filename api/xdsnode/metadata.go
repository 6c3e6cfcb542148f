package xdsnode

import (
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// Proxy roles, node.metadata.role.
const (
	RoleGateway = "gateway"
	RoleSidecar = "sidecar"
	// RoleProxyless is a proxyless gRPC client (grpc-go's own xDS client,
	// no proxy): it subscribes to Listeners named after its targets.
	RoleProxyless = "proxyless"
)

// Defaults of docs/xds.md for what a node does not say.
const (
	DefaultNamespace       = "default"
	DefaultInboundAddress  = "127.0.0.1:15006"
	DefaultOutboundAddress = "127.0.0.1:15001"
	// DefaultCaptureAddress is a transparent sidecar's capture listener,
	// where its application's outbound TCP is redirected.
	DefaultCaptureAddress = "127.0.0.1:15002"
)

// Values of KeyCaptureUnknown: what a capture listener does with a
// connection to a destination that is no mesh service.
const (
	CapturePassthrough = "passthrough"
	CaptureDeny        = "deny"
)

// The node.metadata keys of docs/xds.md: other packages name them by these
// constants (in messages), and encode and decode them with Metadata only.
const (
	KeyRole            = "role"
	KeyNamespace       = "namespace"
	KeyGateway         = "gateway"
	KeyService         = "service"
	KeyInboundAddress  = "inbound_address"
	KeyAppAddress      = "app_address"
	KeyOutboundAddress = "outbound_address"
	KeyAdminAddress    = "admin_address"
	// KeyOutboundTCP is a sidecar's outbound TCP listeners: a
	// comma-separated list of <service>[.<namespace>]:<port>=<ip>:<port>,
	// the local address that reaches that TCP service port.
	KeyOutboundTCP = "outbound_tcp"
	// KeyCaptureAddress is a transparent sidecar's capture listener
	// (host:port): set, the control plane sends it the capture listener,
	// which routes captured connections by their original destination.
	KeyCaptureAddress = "capture_address"
	// KeyCaptureUnknown is what the capture listener does with a
	// destination that is no mesh service: CapturePassthrough (default)
	// or CaptureDeny.
	KeyCaptureUnknown = "capture_unknown"
)

// Metadata is who a proxy says it is in node.metadata (docs/xds.md, "Who a
// proxy is"): its role, and what the control plane builds its
// configuration from. Encode and decode it with this type only, so that the
// proxies, the control plane and the load generator agree on the keys.
type Metadata struct {
	// Role is RoleGateway, RoleSidecar or RoleProxyless.
	Role string
	// Namespace of the gateway or service.
	Namespace string
	// Gateway is the Gateway a gateway node serves.
	Gateway string
	// Service is the service a sidecar fronts.
	Service string
	// InboundAddress, AppAddress and OutboundAddress (host:port) are a
	// sidecar's inbound listener, application and outbound listener.
	InboundAddress  string
	AppAddress      string
	OutboundAddress string
	// AdminAddress (host:port) is where the proxy serves its admin
	// endpoints (/ready, /stats, /metrics), as bound; the control plane
	// shows it in /status, where meshgate top finds the proxies' metrics.
	AdminAddress string
	// OutboundTCP is KeyOutboundTCP's value: the sidecar's outbound TCP
	// listeners.
	OutboundTCP string
	// CaptureAddress and CaptureUnknown are KeyCaptureAddress's and
	// KeyCaptureUnknown's values.
	CaptureAddress string
	CaptureUnknown string
}

// field is one key of node.metadata and the Metadata field it fills.
type field struct {
	key   string
	value *string
}

// fields lists the keys of m, in the order of docs/xds.md.
func (m *Metadata) fields() []field {
	return []field{
		{KeyRole, &m.Role},
		{KeyNamespace, &m.Namespace},
		{KeyGateway, &m.Gateway},
		{KeyService, &m.Service},
		{KeyInboundAddress, &m.InboundAddress},
		{KeyAppAddress, &m.AppAddress},
		{KeyOutboundAddress, &m.OutboundAddress},
		{KeyAdminAddress, &m.AdminAddress},
		{KeyOutboundTCP, &m.OutboundTCP},
		{KeyCaptureAddress, &m.CaptureAddress},
		{KeyCaptureUnknown, &m.CaptureUnknown},
	}
}

// Name is the gateway or service name the node serves, by its role.
func (m Metadata) Name() string {
	if m.Role == RoleGateway {
		return m.Gateway
	}
	return m.Service
}

// Struct encodes m as node.metadata: one string per non-empty field.
func (m Metadata) Struct() *structpb.Struct {
	out := &structpb.Struct{Fields: map[string]*structpb.Value{}}
	for _, f := range m.fields() {
		if *f.value != "" {
			out.Fields[f.key] = structpb.NewStringValue(*f.value)
		}
	}
	return out
}

// Node is the xDS node of a proxy with this metadata: node.id id,
// node.cluster the gateway or service name.
func (m Metadata) Node(id string) *corev3.Node {
	return &corev3.Node{Id: id, Cluster: m.Name(), Metadata: m.Struct()}
}

// Decode reads node.metadata as sent: a missing key or a value that is not
// a string reads as "".
func Decode(s *structpb.Struct) Metadata {
	var m Metadata
	for _, f := range m.fields() {
		*f.value = s.GetFields()[f.key].GetStringValue()
	}
	return m
}

// FromNode reads who a proxy is from its node, with the defaults of
// docs/xds.md: namespace DefaultNamespace; node.cluster stands in for a
// missing gateway or service name; a sidecar's outbound address is
// DefaultOutboundAddress.
func FromNode(node *corev3.Node) Metadata {
	m := Decode(node.GetMetadata())
	if m.Namespace == "" {
		m.Namespace = DefaultNamespace
	}
	switch m.Role {
	case RoleGateway:
		if m.Gateway == "" {
			m.Gateway = node.GetCluster()
		}
	case "":
		// A gRPC client whose bootstrap names no role (a hand-written
		// one): grpc-go sends user_agent_name "gRPC Go" (C++: "gRPC C-core"...).
		if strings.HasPrefix(node.GetUserAgentName(), "gRPC") {
			m.Role = RoleProxyless
			if m.Service == "" {
				m.Service = node.GetCluster()
			}
		}
	case RoleProxyless:
		if m.Service == "" {
			m.Service = node.GetCluster()
		}
	case RoleSidecar:
		if m.Service == "" {
			m.Service = node.GetCluster()
		}
		if m.OutboundAddress == "" {
			m.OutboundAddress = DefaultOutboundAddress
		}
	}
	return m
}
