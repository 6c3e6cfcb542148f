// Package router compiles one Envoy v3 RouteConfiguration (the subset of
// docs/xds.md) into an immutable Table and matches requests against it with
// Envoy's semantics: virtual host by Host (exact, longest suffix wildcard,
// longest prefix wildcard, then "*"), then routes in order, first match wins.
// The typed_per_filter_config of a route, its virtual host and its route
// configuration are compiled by the HTTP filters' registry (PerFilterCompiler)
// and kept opaque, by filter name, for each filter to read
// (Route.PerFilterConfig): the router knows no filter. Matchers shared with
// the filters live in dataplane/internal/match, header mutations in
// dataplane/internal/headers.
//
// Everything a request needs (regular expressions, cluster weights, header
// mutations, timeouts) is computed at Compile time, so Match and the Route
// helpers take no locks and allocate nothing in the common case. A Table is
// safe for concurrent use.
package router
