package xdscheck

import (
	"fmt"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// WebSocketUpgrade is the one upgrade_type the proxy implements (compared
// case-insensitively, as Envoy does): an HTTP/1.1 "Upgrade: websocket"
// request forwarded with its upgrade headers and, on 101 Switching
// Protocols, the two connections spliced.
const WebSocketUpgrade = "websocket"

// The upgrade configs of the connection manager and of a route.
const (
	hcmUpgradeConfigType   protoreflect.FullName = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.UpgradeConfig"
	routeUpgradeConfigType protoreflect.FullName = "envoy.config.route.v3.RouteAction.UpgradeConfig"
	maxUpgradeConfigs                            = 1
)

// upgradeSubset is what WebSocket upgrades add (docs/xds.md, "Upgrades"):
// an upgrade_type of websocket, enabled or not, without a filter chain of
// its own (the listener's HTTP filters run on the upgrade request) and, on
// a route, without a CONNECT config.
func upgradeSubset() Rules {
	return Rules{
		hcmUpgradeConfigType:   Allow("upgrade_type", "enabled").Requires("upgrade_type").CheckedBy(checkUpgradeType),
		routeUpgradeConfigType: Allow("upgrade_type", "enabled").Requires("upgrade_type").CheckedBy(checkUpgradeType),
	}
}

// extendUpgrade adds upgrade_configs to the core rules of the
// HttpConnectionManager and of the RouteAction.
func extendUpgrade(subset Rules) {
	subset[hcmType].With("upgrade_configs", Field{MaxItems: maxUpgradeConfigs})
	subset[routeActionType].With("upgrade_configs", Field{MaxItems: maxUpgradeConfigs})
}

// checkUpgradeType refuses an upgrade_type other than websocket.
func checkUpgradeType(m protoreflect.Message) []Violation {
	fd := m.Descriptor().Fields().ByName("upgrade_type")
	if t := m.Get(fd).String(); !strings.EqualFold(t, WebSocketUpgrade) {
		return []Violation{{Path: "upgrade_type", Reason: fmt.Sprintf("%q not supported (want %q)", t, WebSocketUpgrade)}}
	}
	return nil
}
