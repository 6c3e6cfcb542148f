package xdscheck

import "google.golang.org/protobuf/reflect/protoreflect"

// tlsSubset is the TLS part of docs/xds.md ("Identity, mTLS and
// authorization on the wire"): transport sockets, TLS contexts, secrets.
var tlsSubset = map[protoreflect.FullName]*message{}
