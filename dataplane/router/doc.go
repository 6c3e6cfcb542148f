// Package router compiles one Envoy v3 RouteConfiguration (the subset of
// docs/xds.md) into an immutable Table and matches requests against it with
// Envoy's semantics: virtual host by Host (exact, longest suffix wildcard,
// longest prefix wildcard, then "*"), then routes in order, first match wins.
// A route's typed_per_filter_config may override the listener's RBAC filters
// (Route.RBACOverride); matchers shared with RBAC live in dataplane/internal/match.
//
// Everything a request needs (regular expressions, cluster weights, header
// mutations, timeouts) is computed at Compile time, so Match and the Route
// helpers take no locks and allocate nothing in the common case. A Table is
// safe for concurrent use.
package router
