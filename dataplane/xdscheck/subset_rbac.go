package xdscheck

import "google.golang.org/protobuf/reflect/protoreflect"

// rbacSubset is the RBAC part of docs/xds.md ("Identity, mTLS and
// authorization on the wire"): the RBAC HTTP filter and its per-route config.
var rbacSubset = map[protoreflect.FullName]*message{}
