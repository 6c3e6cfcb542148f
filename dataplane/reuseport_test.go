//go:build linux

package dataplane

import "testing"

// TestBindReusePort: with ReusePort two proxies bind one address (replicas
// of one Gateway on a host); without it the second bind fails, as between
// unrelated proxies.
func TestBindReusePort(t *testing.T) {
	t.Parallel()
	shared := &Proxy{opts: Options{ReusePort: true}}
	first, err := shared.bind("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	address := first.Addr().String()
	second, err := shared.bind(address)
	if err != nil {
		t.Fatalf("second replica's bind of %s: %v", address, err)
	}
	second.Close()
	if ln, err := (&Proxy{}).bind(address); err == nil {
		ln.Close()
		t.Errorf("a proxy without ReusePort bound %s, taken by another", address)
	}
}
