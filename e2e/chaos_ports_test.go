package e2e

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"syscall"
	"testing"
)

// portHold keeps the loopback ports of a stopped process bound, so that no
// other process (an outgoing connection's ephemeral port, another test's
// free port) takes them before it restarts on them. TCP ports are bound
// without listening: a connection is refused, as by the dead process.
type portHold struct {
	fds   []int
	conns []net.PacketConn
}

// holdPorts binds each TCP port of 127.0.0.1, and also the UDP port for
// those in udp; it fails the test when one is already taken.
func holdPorts(t *testing.T, tcp []int, udp ...int) *portHold {
	t.Helper()
	h := &portHold{}
	t.Cleanup(h.release)
	for _, port := range tcp {
		fd, err := bindTCP(port)
		if err != nil {
			t.Fatalf("holding port %d while its process is down: %v (another process took it)", port, err)
		}
		h.fds = append(h.fds, fd)
	}
	for _, port := range udp {
		c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			t.Fatalf("holding UDP port %d while its process is down: %v (another process took it)", port, err)
		}
		h.conns = append(h.conns, c)
	}
	return h
}

// bindTCP binds a TCP socket to 127.0.0.1:port without listening. Without
// SO_REUSEADDR first, so that no other socket can share the port; with it
// when connections of the dead process linger in TIME_WAIT.
func bindTCP(port int) (int, error) {
	var lastErr error
	for _, reuse := range []bool{false, true} {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
		if err != nil {
			return -1, fmt.Errorf("socket: %w", err)
		}
		syscall.CloseOnExec(fd)
		if reuse {
			if err := syscall.SetsockoptInt(fd, syscall.SOL_SOCKET, syscall.SO_REUSEADDR, 1); err != nil {
				syscall.Close(fd)
				return -1, fmt.Errorf("SO_REUSEADDR: %w", err)
			}
		}
		err = syscall.Bind(fd, &syscall.SockaddrInet4{Port: port, Addr: [4]byte{127, 0, 0, 1}})
		if err == nil {
			return fd, nil
		}
		syscall.Close(fd)
		lastErr = err
		if !errors.Is(err, syscall.EADDRINUSE) {
			break
		}
	}
	return -1, fmt.Errorf("bind 127.0.0.1:%d: %w", port, lastErr)
}

// release frees the ports (once), just before their process restarts.
func (h *portHold) release() {
	for _, fd := range h.fds {
		syscall.Close(fd)
	}
	for _, c := range h.conns {
		c.Close()
	}
	h.fds, h.conns = nil, nil
}

// addrPort is the port of a host:port address.
func addrPort(t *testing.T, addr string) int {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestHoldPorts: a held port refuses connections and cannot be listened on
// by anyone else; released, it can.
func TestHoldPorts(t *testing.T) {
	addr := freeAddr(t)
	p := addrPort(t, addr)
	h := holdPorts(t, []int{p}, p)
	if ln, err := net.Listen("tcp", addr); err == nil {
		ln.Close()
		t.Fatalf("listening on held port %d succeeded", p)
	}
	if c, err := net.ListenPacket("udp", addr); err == nil {
		c.Close()
		t.Fatalf("binding held UDP port %d succeeded", p)
	}
	if c, err := net.Dial("tcp", addr); err == nil {
		c.Close()
		t.Fatalf("a held port accepted a connection")
	}
	h.release()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listening on the released port: %v", err)
	}
	ln.Close()
}
