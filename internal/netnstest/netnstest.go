// Package netnstest gives tests fresh network namespaces (root only): each
// is held by a locked OS thread that runs what the test asks in it (socket
// creation, commands, which inherit it), and is gone when the test ends.
package netnstest

import (
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// NS is a network namespace of a test.
type NS struct {
	fd    int
	tid   int
	calls chan func()
}

// Available reports why namespaces cannot be created here ("" when they can).
func Available() string {
	if os.Geteuid() != 0 {
		return "network namespaces need root"
	}
	return ""
}

// New creates a network namespace with its loopback up; it is removed
// (its thread ends) when t ends.
func New(t testing.TB) *NS {
	t.Helper()
	ns := &NS{calls: make(chan func())}
	ready := make(chan error, 1)
	go func() {
		// Never unlocked: the thread, in its own namespace, ends with
		// the goroutine.
		runtime.LockOSThread()
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			ready <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ready <- fmt.Errorf("open namespace: %w", err)
			return
		}
		ns.fd, ns.tid = fd, unix.Gettid()
		ready <- nil
		for f := range ns.calls {
			f()
		}
	}()
	if err := <-ready; err != nil {
		t.Fatalf("netnstest: %v", err)
	}
	t.Cleanup(func() {
		close(ns.calls)
		_ = unix.Close(ns.fd)
	})
	ns.MustRun(t, "ip", "link", "set", "lo", "up")
	return ns
}

// FD is a file descriptor of the namespace.
func (ns *NS) FD() int { return ns.fd }

// PID is a thread id in the namespace (for "ip link set ... netns PID").
func (ns *NS) PID() int { return ns.tid }

// Do runs f in the namespace: sockets it creates, and processes it
// starts, are the namespace's. f must not block on another Do.
func (ns *NS) Do(f func()) {
	done := make(chan struct{})
	ns.calls <- func() {
		defer close(done)
		f()
	}
	<-done
}

// Start starts cmd in the namespace.
func (ns *NS) Start(cmd *exec.Cmd) error {
	var err error
	ns.Do(func() { err = cmd.Start() })
	return err
}

// MustRun runs a command in the namespace, failing t when it fails.
func (ns *NS) MustRun(t testing.TB, name string, args ...string) {
	t.Helper()
	var out []byte
	var err error
	ns.Do(func() { out, err = exec.Command(name, args...).CombinedOutput() })
	if err != nil {
		t.Fatalf("netnstest: %s %s: %v: %s", name, strings.Join(args, " "), err, out)
	}
}

// linkSeq numbers the veth pairs of the process.
var linkSeq atomic.Int64

// Link connects ns to the host's namespace with a veth pair: ns gets
// nsAddr (CIDR, e.g. "10.77.0.2/24") and a default route through hostAddr
// (CIDR), which the host's end gets. The pair is deleted when t ends. It
// returns the name of the host's end.
func (ns *NS) Link(t testing.TB, hostAddr, nsAddr string) string {
	t.Helper()
	n := linkSeq.Add(1)
	host := fmt.Sprintf("mgh%d-%d", os.Getpid()%100000, n)
	peer := fmt.Sprintf("mgn%d-%d", os.Getpid()%100000, n)
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("netnstest: ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { _ = exec.Command("ip", "link", "del", host).Run() })
	run("link", "set", peer, "netns", fmt.Sprint(ns.tid))
	run("addr", "add", hostAddr, "dev", host)
	run("link", "set", host, "up")
	ns.MustRun(t, "ip", "addr", "add", nsAddr, "dev", peer)
	ns.MustRun(t, "ip", "link", "set", peer, "up")
	gw, _, _ := strings.Cut(hostAddr, "/")
	ns.MustRun(t, "ip", "route", "add", "default", "via", gw)
	return host
}

// Subnet is a /24 of 10.0.0.0/8 for the test's links, as "10.x.y" (append
// ".1"): by process and call, so that parallel tests and test processes
// rarely share one.
func Subnet() string {
	n := linkSeq.Add(1)
	return fmt.Sprintf("10.%d.%d", 100+os.Getpid()%150, n%250)
}
