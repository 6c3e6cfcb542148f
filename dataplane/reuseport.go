package dataplane

import (
	"context"
	"net"
)

// bind opens a TCP listener on address for a listener of the
// configuration: with Options.ReusePort, with SO_REUSEPORT set, so that
// other proxies of the host that set it too (replicas of one Gateway)
// bind the same address and the kernel spreads new connections among
// them.
func (p *Proxy) bind(address string) (net.Listener, error) {
	if !p.opts.ReusePort {
		return net.Listen("tcp", address)
	}
	lc := net.ListenConfig{Control: reusePortControl}
	return lc.Listen(context.Background(), "tcp", address)
}
