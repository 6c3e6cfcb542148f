package router

import (
	"fmt"
	"strings"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// WebSocket is a route's say on WebSocket upgrades (RouteAction
// upgrade_configs), which overrides the connection manager's.
type WebSocket uint8

const (
	// WebSocketInherit: the route says nothing; the connection manager's
	// upgrade_configs decide.
	WebSocketInherit WebSocket = iota
	// WebSocketEnabled: upgrades are forwarded on this route.
	WebSocketEnabled
	// WebSocketDisabled: the Upgrade header is removed on this route.
	WebSocketDisabled
)

// WebSocket is the route's upgrade_configs for websocket.
func (rt *Route) WebSocket() WebSocket { return rt.webSocket }

// WebSocketAllowed reports whether a WebSocket upgrade on the route rt is
// forwarded, when the connection manager enables them (listener).
func (rt *Route) WebSocketAllowed(listener bool) bool {
	switch rt.webSocket {
	case WebSocketEnabled:
		return true
	case WebSocketDisabled:
		return false
	}
	return listener
}

// compileUpgrade reads the route action's upgrade_configs: one websocket
// entry, enabled unless it says otherwise.
func compileUpgrade(rt *Route, ra *routev3.RouteAction) error {
	for i, uc := range ra.GetUpgradeConfigs() {
		if !strings.EqualFold(uc.GetUpgradeType(), "websocket") {
			return fmt.Errorf("upgrade_configs[%d].upgrade_type: %q not supported", i, uc.GetUpgradeType())
		}
		if uc.GetConnectConfig() != nil {
			return fmt.Errorf("upgrade_configs[%d].connect_config: not supported", i)
		}
		rt.webSocket = WebSocketEnabled
		if e := uc.GetEnabled(); e != nil && !e.GetValue() {
			rt.webSocket = WebSocketDisabled
		}
	}
	return nil
}
