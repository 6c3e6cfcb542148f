package main

import (
	"net"
	"strconv"
	"testing"
)

// TestPortPickerBelowEphemeralRange: the ports meshgate dev picks are
// distinct and, where the kernel says where its ephemeral range starts,
// below it, so that no outgoing connection takes one before its user binds
// it.
func TestPortPickerBelowEphemeralRange(t *testing.T) {
	var p portPicker
	defer p.release()
	low := ephemeralLow()
	seen := map[string]bool{}
	for range 20 {
		addr, err := p.next()
		if err != nil {
			t.Fatal(err)
		}
		if seen[addr] {
			t.Fatalf("%s picked twice", addr)
		}
		seen[addr] = true
		_, port, _ := net.SplitHostPort(addr)
		n, _ := strconv.Atoi(port)
		if low > pickFloor && (n < pickFloor || n >= low) {
			t.Errorf("picked %s, want a port in [%d, %d)", addr, pickFloor, low)
		}
	}
}
