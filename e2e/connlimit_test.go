package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// proxyConnStats is the connection part of a proxy's /stats.
type proxyConnStats struct {
	Active    map[string]int `json:"downstream_cx_active"`
	Idle      map[string]int `json:"downstream_cx_idle"`
	Overflow  int64          `json:"downstream_cx_overflow"`
	Reclaimed int64          `json:"downstream_cx_reclaimed"`
	Releases  int64          `json:"memory_releases"`
}

func (s proxyConnStats) total() (active, idle int) {
	for _, n := range s.Active {
		active += n
	}
	for _, n := range s.Idle {
		idle += n
	}
	return active, idle
}

func readProxyConnStats(admin string) (proxyConnStats, error) {
	var s proxyConnStats
	resp, err := client.Get("http://" + admin + "/stats")
	if err != nil {
		return s, err
	}
	defer resp.Body.Close()
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// anonRSS is the anonymous part of a process's resident set (RssAnon of
// /proc/<pid>/status: VmRSS without the file-backed pages of the binary,
// which the kernel maps in as code runs and shares between processes).
func anonRSS(t *testing.T, pid int) int64 {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatalf("resident set of %d: %v", pid, err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "RssAnon:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("RssAnon %q: %v", rest, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no RssAnon in /proc/%d/status", pid)
	return 0
}

// dialAll opens n connections to addr; they are closed at the end of the
// test (or by closeAll).
func dialAll(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() { closeAll(conns) })
	for range n {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("connection %d of %d: %v", len(conns)+1, n, err)
		}
		conns = append(conns, c)
	}
	return conns
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		c.Close()
	}
}

// TestConnectionLimit: a gateway limited to 1000 connections per listener
// holds no more whatever the clients do. 2500 connections that send
// nothing: the newest 1000 are held, the older ones closed as new ones
// arrive, and a normal client is served; the resident memory grows by a
// bounded amount and falls back (by a third at least) once they close. 1000 connections each in
// a request: a new connection is shed at once, and counted.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	const limit, idleConns = 1000, 2500
	c := newCluster(t)
	c.policy("edge.yaml", yamlDocs(edgeGateway, staticServices("app")))
	c.policy("route.yaml", routeTo("app"))
	c.startControlPlane()
	c.app("app", "app", "v1", "")
	gw := c.gateway("edge", "--max-connections", strconv.Itoa(limit))
	admin := c.addr("gateway-admin-edge")
	gwAddr := c.addr("gw")
	url := "http://" + gwAddr + "/"
	c.expectEventually("the app through the gateway", 15*time.Second, url, nil, servedBy("app"))
	fresh := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	waitConns := func(what string, cond func(s proxyConnStats) error) proxyConnStats {
		t.Helper()
		var s proxyConnStats
		eventually(t, 30*time.Second, what, func() error {
			var err error
			if s, err = readProxyConnStats(admin); err != nil {
				return err
			}
			return cond(s)
		})
		return s
	}
	client.CloseIdleConnections() // the shared client's kept-alive connection to the gateway
	waitConns("no connection left", func(s proxyConnStats) error {
		if a, _ := s.total(); a != 0 {
			return fmt.Errorf("%d open", a)
		}
		return nil
	})
	pid := gw.cmd.Process.Pid
	rssBefore := anonRSS(t, pid)

	// Idle connections: the oldest make room for the newest.
	idle := dialAll(t, gwAddr, idleConns)
	s := waitConns("the limit held", func(s proxyConnStats) error {
		if a, _ := s.total(); a != limit || s.Reclaimed != idleConns-limit {
			return fmt.Errorf("%d open, %d reclaimed", a, s.Reclaimed)
		}
		return nil
	})
	rssIdle := anonRSS(t, pid)
	if code, body, err := getWith(fresh, url); err != nil || code != http.StatusOK {
		t.Errorf("a normal client with %d idle connections open: %d %q %v; want served", limit, code, body, err)
	}
	closeAll(idle)
	waitConns("the idle connections gone", func(s proxyConnStats) error {
		if a, _ := s.total(); a != 0 {
			return fmt.Errorf("%d open", a)
		}
		return nil
	})
	s = waitConns("memory given back to the system", func(s proxyConnStats) error {
		if s.Releases < 1 {
			return fmt.Errorf("no release yet")
		}
		return nil
	})
	// At least a third of what the connections took is given back (60-70 %
	// measured, the rest is runtime structures kept for reuse; without the
	// relief nearly nothing is, for minutes).
	var rssAfter int64
	eventually(t, 30*time.Second, "resident memory back down", func() error {
		rssAfter = anonRSS(t, pid)
		if rssAfter-rssBefore > (rssIdle-rssBefore)*2/3 {
			return fmt.Errorf("resident %d MiB, %d MiB before", rssAfter>>20, rssBefore>>20)
		}
		return nil
	})
	grown := rssIdle - rssBefore
	t.Logf("anonymous resident memory: %.1f MiB before, %.1f MiB with %d connections opened and %d held (%d B per held connection), %.1f MiB after they closed; %d overflow, %d reclaimed, %d releases",
		float64(rssBefore)/(1<<20), float64(rssIdle)/(1<<20), idleConns, limit, grown/limit, float64(rssAfter)/(1<<20), s.Overflow, s.Reclaimed, s.Releases)
	if grown > maxRSSPerHeldConn*limit {
		t.Errorf("resident memory grew by %d B per held connection; want at most %d", grown/limit, maxRSSPerHeldConn)
	}

	// Busy connections: nothing to reclaim, a new connection is shed.
	busy := dialAll(t, gwAddr, limit)
	for _, conn := range busy {
		if _, err := io.WriteString(conn, "GET /delay/60000 HTTP/1.1\r\nHost: app\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	waitConns("every connection busy", func(s proxyConnStats) error {
		if a, i := s.total(); a != limit || i != 0 {
			return fmt.Errorf("%d open, %d idle", a, i)
		}
		return nil
	})
	// Shed: reset as soon as accepted (the reset may reach the client
	// before its connect returns).
	if shed, err := net.Dial("tcp", gwAddr); err == nil {
		_ = shed.SetReadDeadline(time.Now().Add(10 * time.Second)) // bounds a hung test only
		if n, err := shed.Read(make([]byte, 1)); n != 0 || err == nil || isNetTimeout(err) {
			t.Errorf("a connection over the limit with every connection busy: read %d, %v; want closed at once", n, err)
		}
		shed.Close()
	} else if !errors.Is(err, syscall.ECONNRESET) {
		t.Errorf("a connection over the limit with every connection busy: %v; want reset", err)
	}
	if s, err := readProxyConnStats(admin); err != nil || s.Overflow < 1 {
		t.Errorf("overflow not counted: %+v %v", s, err)
	}
	closeAll(busy)
	eventually(t, 30*time.Second, "served again once the busy connections close", func() error {
		if code, body, err := getWith(fresh, url); err != nil || code != http.StatusOK {
			return fmt.Errorf("%d %q %v", code, body, err)
		}
		return nil
	})
	if strings.Count(gw.out.String(), "listener at its connection limit") == 0 {
		t.Error("no warning logged at the limit")
	}
}

// maxRSSPerHeldConn bounds the resident memory (anonymous RSS, not heap:
// the runtime's own structures included) of an idle connection held by the
// gateway: ~6 KB measured; ~14 KB with its buffers held.
const maxRSSPerHeldConn = 10 << 10

func isNetTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

// getWith sends a GET with hc and returns the status and body.
func getWith(hc *http.Client, url string) (int, string, error) {
	resp, err := hc.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(bufio.NewReader(resp.Body))
	return resp.StatusCode, string(b), err
}
