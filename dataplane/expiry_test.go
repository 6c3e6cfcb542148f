package dataplane

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/meshgate/meshgate/dataplane/meshtls"
	"github.com/meshgate/meshgate/dataplane/meshtls/meshtlstest"
)

// holdingBackend answers "a", and holds a request to /hold until its client
// goes away (at most a minute), after reporting it on held.
func holdingBackend(t *testing.T) (addr string, held <-chan struct{}) {
	t.Helper()
	ch := make(chan struct{}, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			ch <- struct{}{}
			select {
			case <-r.Context().Done():
			case <-time.After(time.Minute):
			}
			return
		}
		_, _ = io.WriteString(w, "a")
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String(), ch
}

// resumingClient is an HTTPS client presenting cert, verifying the server as
// ordersID of the mesh CA, and resuming TLS sessions; no overall timeout.
func resumingClient(t *testing.T, cert *tls.Certificate, bundlePEM []byte) (*http.Client, *http.Transport) {
	t.Helper()
	bundle, err := meshtls.ParseBundle(bundlePEM)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		InsecureSkipVerify: true, // verified by SPIFFE ID below
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := meshtls.VerifyPeer(cs.PeerCertificates, bundle, []string{ordersID}, time.Now())
			return err
		},
		Certificates:       []tls.Certificate{*cert},
		ClientSessionCache: tls.NewLRUClientSessionCache(8),
	}
	tr := &http.Transport{TLSClientConfig: cfg}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}, tr
}

// startStrictInbound runs a proxy with identity id and a STRICT mTLS
// listener in front of backend, and returns the listener's address once a
// client with a certificate of mesh is served.
func startStrictInbound(t *testing.T, server func(*Options), mesh *meshtlstest.CA, id *meshtlstest.Identity, backendAddr string) string {
	t.Helper()
	cp := startControlPlane(t)
	p := startIdentityProxy(t, cp, id, server)
	cp.set(t, tlsConfig{
		config: config{version: "v1", listenAddr: "127.0.0.1:0", cluster: "default/a:80", backend: backendAddr},
		mode:   "strict", bundle: mesh.PEM,
	}.build(t))
	good := meshClient(t, mesh.Issue(t, webID), mesh.PEM, ordersID, false)
	var addr string
	eventually(t, "the TLS listener to serve", func() bool {
		addr = p.ListenerAddrs()["edge"]
		_, body, err := getProto(good, "https://"+addr+"/")
		return err == nil && body == "a"
	})
	return addr
}

// TestInboundConnectionsEndWithTheClientCertificate: a connection from a
// client whose certificate is about to expire is asked to close after each
// response (Connection: close); once the certificate has expired, the
// connection is closed even in the middle of a request, and neither a new
// handshake nor the resumption of a session made with it gets through.
func TestInboundConnectionsEndWithTheClientCertificate(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, testInboundConnectionsEndWithTheClientCertificate)
}

func testInboundConnectionsEndWithTheClientCertificate(t *testing.T, server func(*Options)) {
	mesh := meshtlstest.NewCA(t, "mesh")
	id := meshtlstest.NewIdentity(ordersID, mesh.Issue(t, ordersID))
	backendAddr, held := holdingBackend(t)
	addr := startStrictInbound(t, server, mesh, id, backendAddr)

	// A certificate with most of its life left: keep-alive.
	fresh, freshTr := resumingClient(t, mesh.Issue(t, webID), mesh.PEM)
	resp, err := fresh.Get("https://" + addr + "/")
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.Close {
		t.Error("a connection with fresh certificates was asked to close")
	}
	freshTr.CloseIdleConnections()

	// A certificate in the last eighth of its life: Connection: close, and
	// a request held across its expiry loses its connection. (On a machine
	// so slow that the request does not reach the backend before the
	// certificate expires, again with a new certificate.)
	for attempt := 1; ; attempt++ {
		notAfter := time.Now().Add(4 * time.Second)
		expiring := mesh.IssueValid(t, webID, notAfter.Add(-time.Minute), notAfter)
		client, tr := resumingClient(t, expiring, mesh.PEM)
		resp, err = client.Get("https://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if !resp.Close {
			t.Error("a connection whose client certificate is about to expire was not asked to close")
		}

		type result struct {
			status int
			err    error
			at     time.Time
		}
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		done := make(chan result, 1)
		go func() {
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+"/hold", nil)
			resp, err := client.Do(req)
			if err != nil {
				done <- result{err: err, at: time.Now()}
				return
			}
			_, err = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			done <- result{status: resp.StatusCode, err: err, at: time.Now()}
		}()
		select {
		case <-held:
		case r := <-done:
			cancel()
			if attempt < 3 && !r.at.Before(expiring.Leaf.NotAfter) {
				t.Logf("attempt %d: the request reached the proxy after the certificate expired (%v); again", attempt, r.err)
				continue
			}
			t.Fatalf("the held request ended before it reached the backend: %d, %v", r.status, r.err)
		}
		r := <-done
		timedOut := ctx.Err() != nil
		cancel()
		switch {
		case r.err == nil:
			t.Fatalf("the held request got a response (%d) instead of losing its connection when the client certificate expired", r.status)
		case timedOut:
			t.Fatal("the held request's connection was not closed when the client certificate expired")
		case r.at.Before(expiring.Leaf.NotAfter):
			t.Fatalf("the held request failed at %s, before the client certificate expired (%s): %v", r.at, expiring.Leaf.NotAfter, r.err)
		}

		// After the expiry, the cached session does not get a connection
		// in, nor a full handshake.
		tr.CloseIdleConnections()
		if _, err := client.Get("https://" + addr + "/"); err == nil {
			t.Error("a client with an expired certificate (and a session to resume) was served")
		}
		return
	}
}

// TestInboundSessionsFollowTheCertificate: sessions are resumed while the
// proxy's certificate stays, and not once it was renewed: the client then
// sees the new certificate.
func TestInboundSessionsFollowTheCertificate(t *testing.T) {
	t.Parallel()
	forEachHTTP1Server(t, testInboundSessionsFollowTheCertificate)
}

func testInboundSessionsFollowTheCertificate(t *testing.T, server func(*Options)) {
	mesh := meshtlstest.NewCA(t, "mesh")
	id := meshtlstest.NewIdentity(ordersID, mesh.Issue(t, ordersID))
	backendAddr, _ := holdingBackend(t)
	addr := startStrictInbound(t, server, mesh, id, backendAddr)
	client, tr := resumingClient(t, mesh.Issue(t, webID), mesh.PEM)
	get := func() *tls.ConnectionState {
		t.Helper()
		tr.CloseIdleConnections()
		resp, err := client.Get("https://" + addr + "/")
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.TLS
	}
	get()
	if cs := get(); !cs.DidResume {
		t.Fatal("the second connection did not resume the session")
	}
	renewed := mesh.Issue(t, ordersID)
	id.SetCertificate(renewed)
	cs := get()
	if cs.DidResume {
		t.Error("a session of the proxy's previous certificate was resumed after its renewal")
	}
	if !strings.EqualFold(cs.PeerCertificates[0].SerialNumber.Text(16), renewed.Leaf.SerialNumber.Text(16)) {
		t.Error("the client did not see the renewed certificate")
	}
	if cs := get(); !cs.DidResume {
		t.Error("sessions of the renewed certificate are not resumed")
	}
}
