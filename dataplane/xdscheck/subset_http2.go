package xdscheck

// extendHTTP2 adds HttpConnectionManager.http2_protocol_options to the core
// rules (docs/xds.md, "HTTP/2"): the stream limit and the two flow-control
// windows the proxy advertises to HTTP/2 clients, in Envoy's ranges (the
// message's own validation rules, run on every typed config):
// max_concurrent_streams 1 to 2^31-1, the windows 65535 to 2^31-1. The
// rule is the field's (Field.Only), not the message type's: a cluster's
// http2_protocol_options stay empty.
func extendHTTP2(subset Rules) {
	subset[hcmType].With("http2_protocol_options", Field{Only: Allow(
		"max_concurrent_streams", "initial_stream_window_size", "initial_connection_window_size")})
}
