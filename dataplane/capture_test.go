package dataplane

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"
)

func TestCaptureMatch(t *testing.T) {
	p := func(s string) []netip.Prefix { return []netip.Prefix{netip.MustParsePrefix(s)} }
	http := []string{"http/1.1", "h2c"}
	cs := &captureSpec{chains: []captureChain{
		{name: "orders-http", port: 80, prefixes: p("10.0.0.2/32"), transport: "raw_buffer", protocols: http, http: true},
		{name: "db", port: 5432, prefixes: p("10.0.0.3/32")},
		{name: "subnet-80", port: 80, prefixes: p("10.0.0.0/24")},
		{name: "any-port-10.1", prefixes: p("10.1.0.0/16")},
	}}
	for _, tc := range []struct {
		dst       string
		transport string
		protocols []string
		want      string // "" for none (the default chain)
		inspected bool
	}{
		{dst: "10.0.0.3:5432", want: "db"},            // no inspection: no byte waited for
		{dst: "10.0.0.3:5433", want: ""},              // another port
		{dst: "10.0.0.9:80", want: "subnet-80"},       // the longest prefix holding it
		{dst: "10.1.2.3:9999", want: "any-port-10.1"}, // chains without a port
		{dst: "10.0.0.2:80", transport: "raw_buffer", protocols: []string{"http/1.1"}, want: "orders-http", inspected: true},
		{dst: "10.0.0.2:80", transport: "tls", want: "", inspected: true},        // TLS to an HTTP port: no going back to the /24
		{dst: "10.0.0.2:80", transport: "raw_buffer", want: "", inspected: true}, // not HTTP
		{dst: "[::ffff:10.0.0.3]:5432", want: "db"},                              // v4-mapped
	} {
		t.Run(tc.dst+"/"+tc.transport+fmt.Sprint(tc.protocols), func(t *testing.T) {
			inspected := false
			i := cs.match(netip.MustParseAddrPort(tc.dst), func() (string, []string) {
				inspected = true
				return tc.transport, tc.protocols
			})
			got := ""
			if i >= 0 {
				got = cs.chains[i].name
			}
			if got != tc.want || inspected != tc.inspected {
				t.Fatalf("match = %q (inspected %v), want %q (inspected %v)", got, inspected, tc.want, tc.inspected)
			}
		})
	}
}

func TestInspectCapture(t *testing.T) {
	for _, tc := range []struct {
		name      string
		send      string
		transport string
		protocols []string
		timedOut  bool
	}{
		{"http/1.1", "GET /items HTTP/1.1\r\nHost: orders\r\n\r\n", "raw_buffer", []string{"http/1.1"}, false},
		{"http/1.0", "POST / HTTP/1.0\r\n", "raw_buffer", []string{"http/1.0"}, false},
		{"h2c", h2Preface + "\x00\x00", "raw_buffer", []string{"h2c"}, false},
		{"not a method", "hello world\n", "raw_buffer", nil, false},
		{"binary", "\x00\x01\x02", "raw_buffer", nil, false},
		{"no version", "GET / FOO\r\n", "raw_buffer", nil, false},
		{"partial line, then silence", "GET /slow", "raw_buffer", nil, true},
		{"server first: nothing", "", "raw_buffer", nil, true},
		{"tls", "\x16\x03\x01\x00\x05hello", "tls", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// A TCP pair: what the client sends is in the server's
			// buffer before the inspection starts.
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			client, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			server, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer server.Close()
			if _, err := client.Write([]byte(tc.send)); err != nil {
				t.Fatal(err)
			}
			if tc.transport == "tls" {
				_ = client.Close() // a truncated ClientHello: still TLS
			}
			// The deadline only matters for the cases that wait for it.
			timeout := time.Hour
			if tc.timedOut {
				timeout = 10 * time.Millisecond
			}
			transport, protocols, read, timedOut, err := inspectCapture(server, timeout, true, true)
			if err != nil {
				t.Fatal(err)
			}
			if transport != tc.transport || !slices.Equal(protocols, tc.protocols) || timedOut != tc.timedOut {
				t.Fatalf("got %s %v timedOut=%v, want %s %v timedOut=%v", transport, protocols, timedOut, tc.transport, tc.protocols, tc.timedOut)
			}
			if string(read) != tc.send {
				t.Fatalf("read %q, want %q", read, tc.send)
			}
		})
	}
}
