package upstream

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/meshgate/meshgate/dataplane/meshtls"
	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
)

// expiryServer is an mTLS endpoint presenting cert that answers the number
// of connections it has accepted, and holds a request to /hold (reported
// on held) until its client goes away.
func expiryServer(t *testing.T, mesh *meshtlstest.CA, cert *tls.Certificate) (addr string, conns func() int, held <-chan struct{}) {
	t.Helper()
	bundle, err := meshtls.ParseBundle(mesh.PEM)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	seen := map[string]bool{}
	ch := make(chan struct{}, 16)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.RemoteAddr] = true
		mu.Unlock()
		if r.URL.Path == "/hold" {
			ch <- struct{}{}
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{*cert}, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: bundle.Pool}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(seen)
	}, ch
}

// fastRoundTrip sends a GET the way the proxy does (Cluster.RoundTrip: the
// HTTP/1.1 pool of body-less requests) and returns the body.
func fastRoundTrip(c *Cluster, endpoint string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, "http://"+endpoint+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.RoundTrip(req, 0)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return string(body), err
}

// TestH1PoolRetiresConnections: a pooled connection whose endpoint
// certificate is in the last eighth of its life is not reused; one with a
// fresh certificate is.
func TestH1PoolRetiresConnections(t *testing.T) {
	t.Parallel()
	mesh := meshtlstest.NewCA(t, "mesh")
	tests := []struct {
		name string
		// notBefore and notAfter of the endpoint's certificate, from now.
		notBefore, notAfter time.Duration
		wantConns           int
	}{
		{"fresh certificate: one connection", -time.Hour, time.Hour, 1},
		{"certificate about to expire: a connection per request", -80 * time.Second, 10 * time.Second, 3},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			now := time.Now()
			addr, conns, _ := expiryServer(t, mesh, mesh.IssueValid(t, ordersID, now.Add(tt.notBefore), now.Add(tt.notAfter)))
			client := meshtlstest.NewIdentity(webID, mesh.Issue(t, webID))
			c, err := NewCluster(withMTLS(t, staticClusterAt(t, addr), upstreamContext(ordersID, "http/1.1")), nil,
				WithTLS(TLS{Certificate: client.Certificate, TrustBundle: newTrust(t, mesh.PEM).get}))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(c.Close)
			for range 3 {
				if got, err := fastRoundTrip(c, addr); err != nil || got != "ok" {
					t.Fatalf("RoundTrip() = %q, %v", got, err)
				}
			}
			if got := conns(); got != tt.wantConns {
				t.Errorf("3 requests used %d connections, want %d", got, tt.wantConns)
			}
		})
	}
}

// TestClusterConnectionsEndWithThePeerCertificate: an upstream connection
// is closed when the endpoint's certificate expires, even in the middle of
// a request, and no new connection (full or resumed) is made with it.
func TestClusterConnectionsEndWithThePeerCertificate(t *testing.T) {
	t.Parallel()
	paths := []struct {
		name string
		send func(c *Cluster, r *http.Request) (*http.Response, error)
	}{
		{"HTTP/1.1 pool", func(c *Cluster, r *http.Request) (*http.Response, error) { return c.RoundTrip(r, 0) }},
		{"http.Transport", func(c *Cluster, r *http.Request) (*http.Response, error) { return c.Transport().RoundTrip(r) }},
	}
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			t.Parallel()
			testClusterConnectionsEndWithThePeerCertificate(t, path.send)
		})
	}
}

func testClusterConnectionsEndWithThePeerCertificate(t *testing.T, send func(c *Cluster, r *http.Request) (*http.Response, error)) {
	mesh := meshtlstest.NewCA(t, "mesh")
	client := meshtlstest.NewIdentity(webID, mesh.Issue(t, webID))
	// On a machine so slow that the held request does not reach the
	// endpoint before its certificate expires, again with a new one.
	for attempt := 1; ; attempt++ {
		notAfter := time.Now().Add(4 * time.Second)
		cert := mesh.IssueValid(t, ordersID, notAfter.Add(-time.Hour), notAfter)
		addr, _, held := expiryServer(t, mesh, cert)
		c, err := NewCluster(withMTLS(t, staticClusterAt(t, addr), upstreamContext(ordersID, "http/1.1")), nil,
			WithTLS(TLS{Certificate: client.Certificate, TrustBundle: newTrust(t, mesh.PEM).get}))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		// Two connections: the second resumes the first's session, which
		// is then in the cache.
		for range 2 {
			if got, err := roundTrip(c, addr); err != nil || got != "ok" {
				t.Fatalf("RoundTrip() = %q, %v", got, err)
			}
		}

		type result struct {
			err error
			at  time.Time
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		done := make(chan result, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/hold", nil)
			resp, err := send(c, req)
			if err == nil {
				_, err = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err == nil {
					err = errors.New("got a response: " + resp.Status)
				}
			}
			done <- result{err: err, at: time.Now()}
		}()
		select {
		case <-held:
		case r := <-done:
			cancel()
			if attempt < 3 && !r.at.Before(notAfter) {
				t.Logf("attempt %d: the request reached the endpoint after its certificate expired (%v); again", attempt, r.err)
				continue
			}
			t.Fatalf("the held request ended before it reached the endpoint: %v", r.err)
		}
		r := <-done
		timedOut := ctx.Err() != nil
		cancel()
		switch {
		case timedOut:
			t.Fatal("the held request's connection was not closed when the endpoint's certificate expired")
		case strings.HasPrefix(r.err.Error(), "got a response"):
			t.Fatalf("the held request %v", r.err)
		case r.at.Before(cert.Leaf.NotAfter):
			t.Fatalf("the held request failed at %s, before the endpoint's certificate expired (%s): %v", r.at, cert.Leaf.NotAfter, r.err)
		}
		// A session of that certificate is cached; it is not resumed (and
		// a full handshake fails).
		c.closeIdle()
		var opErr *net.OpError
		if _, err := roundTrip(c, addr); !errors.As(err, &opErr) || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("RoundTrip() after the endpoint's certificate expired = %v, want a dial error: expired", err)
		}
		return
	}
}
