package xdsnode

import corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"

// UserAgentEnvoy is node.user_agent_name of an Envoy (Envoy sets it
// itself): the control plane serves such a node the resources of its role
// in the form Envoy needs (docs/xds.md, "Envoy nodes"). meshgate's proxies
// send no user agent.
const UserAgentEnvoy = "envoy"

// IsEnvoy reports whether node is an Envoy.
func IsEnvoy(node *corev3.Node) bool { return node.GetUserAgentName() == UserAgentEnvoy }
