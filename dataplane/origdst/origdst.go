// Package origdst reads the original destination of a connection that
// netfilter redirected (nftables "redirect", iptables REDIRECT): the
// address the client connected to before the rule rewrote it, as Envoy's
// original_dst listener filter does with SO_ORIGINAL_DST.
package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST (linux/netfilter_ipv6/ip6_tables.h).
const ip6tSOOriginalDst = 80

// ErrNotRedirected is returned for a connection no rule redirected: its
// original destination is its local address.
var ErrNotRedirected = errors.New("origdst: connection was not redirected")

// Get returns the original destination of c, a connection accepted by a
// TCP listener. A connection that was not redirected gives its own local
// address and ErrNotRedirected.
func Get(c net.Conn) (netip.AddrPort, error) {
	local, _ := c.LocalAddr().(*net.TCPAddr)
	if local == nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %T is not a TCP connection", c)
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("origdst: %T has no file descriptor", c)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
	}
	var dst netip.AddrPort
	var opErr error
	v6 := local.IP.To4() == nil
	if err := raw.Control(func(fd uintptr) { dst, opErr = originalDst(int(fd), v6) }); err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: %w", err)
	}
	if opErr != nil {
		return netip.AddrPort{}, opErr
	}
	if dst == local.AddrPort() || dst.Addr().Unmap() == local.AddrPort().Addr().Unmap() && dst.Port() == local.AddrPort().Port() {
		return dst, ErrNotRedirected
	}
	return dst, nil
}

// originalDst is getsockopt(SO_ORIGINAL_DST) on fd.
func originalDst(fd int, v6 bool) (netip.AddrPort, error) {
	if v6 {
		var sa unix.RawSockaddrInet6
		size := uint32(unsafe.Sizeof(sa))
		if err := getsockopt(fd, unix.SOL_IPV6, ip6tSOOriginalDst, unsafe.Pointer(&sa), &size); err != nil {
			return netip.AddrPort{}, fmt.Errorf("origdst: getsockopt IP6T_SO_ORIGINAL_DST: %w", err)
		}
		port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
		return netip.AddrPortFrom(netip.AddrFrom16(sa.Addr), port), nil
	}
	var sa unix.RawSockaddrInet4
	size := uint32(unsafe.Sizeof(sa))
	if err := getsockopt(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST, unsafe.Pointer(&sa), &size); err != nil {
		return netip.AddrPort{}, fmt.Errorf("origdst: getsockopt SO_ORIGINAL_DST: %w", err)
	}
	port := binary.BigEndian.Uint16((*[2]byte)(unsafe.Pointer(&sa.Port))[:])
	return netip.AddrPortFrom(netip.AddrFrom4(sa.Addr), port), nil
}

// getsockopt is the raw system call (x/sys has no getter for a sockaddr).
func getsockopt(fd, level, name int, value unsafe.Pointer, size *uint32) error {
	_, _, errno := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), uintptr(level), uintptr(name), uintptr(value), uintptr(unsafe.Pointer(size)), 0)
	if errno != 0 {
		return errno
	}
	return nil
}
