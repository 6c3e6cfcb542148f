package e2e

import (
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// redisServer is a real Redis (Debian's redis-server) on a free loopback
// port, without persistence, for the global rate limit tests.
type redisServer struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{}
}

// startRedis starts redis-server, waits until it answers PING, and stops
// it at the end of the test.
func startRedis(t *testing.T) *redisServer {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if testing.Short() {
			t.Skip("redis-server not installed")
		}
		t.Fatalf("redis-server: %v (apt-get install redis-server)", err)
	}
	addr := freeAddr(t)
	_, port, _ := net.SplitHostPort(addr)
	r := &redisServer{addr: addr, done: make(chan struct{})}
	r.cmd = exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	t.Cleanup(r.kill)
	eventually(t, 20*time.Second, "redis-server at "+addr, func() error { return redisPing(addr) })
	return r
}

// kill stops the server at once.
func (r *redisServer) kill() {
	_ = r.cmd.Process.Kill()
	<-r.done
}

// redisPing sends PING in RESP and expects +PONG.
func redisPing(addr string) error {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	buf := make([]byte, 16)
	n, err := conn.Read(buf)
	if err != nil {
		return err
	}
	if !strings.HasPrefix(string(buf[:n]), "+PONG") {
		return &net.AddrError{Err: "unexpected reply " + string(buf[:n]), Addr: addr}
	}
	return nil
}
