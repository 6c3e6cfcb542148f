package h1server

import (
	"bytes"
	"testing"
)

// FuzzServer feeds arbitrary bytes, as one connection, to the fast server
// (with a handler echoing the request) and to net/http with the same
// handler: the fast server must not panic or hang, and every response must
// be the one net/http gives (Date values and header order aside), whether
// the fast path or its Fallback produced it.
func FuzzServer(f *testing.F) {
	addParitySeeds(f)
	ms := startMemServers(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) > 64<<10 {
			return
		}
		fast, std, diff := ms.compare(t, data)
		if diff == "" {
			return
		}
		if len(data) > 0 && bytes.Contains(data[1:], []byte("PRI")) {
			// The one intended difference: a "PRI * HTTP/2.0" request
			// after others closes the connection (package documentation).
			return
		}
		t.Fatalf("%s\ninput: %q\nfast output: %q\nstd output:  %q", diff, data, fast, std)
	})
}
