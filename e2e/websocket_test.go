package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// startWebSocketEcho starts a WebSocket backend (github.com/coder/websocket)
// on loopback that echoes every message, and returns its address.
func startWebSocketEcho(t *testing.T) string {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{InsecureSkipVerify: true})
		if err != nil {
			return
		}
		defer c.CloseNow()
		for {
			typ, msg, err := c.Read(r.Context())
			if err != nil {
				return
			}
			if err := c.Write(r.Context(), typ, msg); err != nil {
				return
			}
		}
	}))
	t.Cleanup(srv.Close)
	return srv.Listener.Addr().String()
}

// webSocketEcho dials url (with Host host when not empty), sends a text and
// a binary message and checks that both come back.
func webSocketEcho(ctx context.Context, url, host string) error {
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{Host: host})
	if err != nil {
		if resp != nil {
			return fmt.Errorf("dial: %w (status %d)", err, resp.StatusCode)
		}
		return fmt.Errorf("dial: %w", err)
	}
	defer c.CloseNow()
	for _, m := range []struct {
		typ  websocket.MessageType
		data string
	}{{websocket.MessageText, "Websocket Support!"}, {websocket.MessageBinary, "\x00\x01\x02\r\n\xff"}} {
		if err := c.Write(ctx, m.typ, []byte(m.data)); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if typ != m.typ || string(got) != m.data {
			return fmt.Errorf("echo %v %q, want %v %q", typ, got, m.typ, m.data)
		}
	}
	return c.Close(websocket.StatusNormalClosure, "")
}

// TestWebSocket: a WebSocket (github.com/coder/websocket) echoes through
// the gateway to a service behind its sidecar, and from one sidecar's
// outbound listener to another service's sidecar (mesh mTLS between
// them): the upgrade is forwarded and the connections are spliced at
// every hop. A SecurityPolicy that denies the path answers the upgrade 403
// on both ways.
func TestWebSocket(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	echo := startWebSocketEcho(t)
	c.policy("ws.yaml", yamlDocs(edgeGateway, routeTo("wsecho"), meshServices("wsecho", "caller"), `
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: wsecho-private}
spec:
  targetRefs: [{kind: Service, name: wsecho}]
  rules:
    - name: no-private
      action: DENY
      to: [{paths: ["/private/*"]}]
`))
	c.startControlPlane()
	c.sidecar("wsecho", echo, c.addr("wsecho-in"), c.addr("wsecho-out"))
	c.sidecar("caller", c.addr("caller-app"), c.addr("caller-in"), c.addr("caller-out"))
	c.gateway("edge")

	tests := []struct{ name, url, host string }{
		{name: "through the gateway", url: "ws://" + c.addr("gw") + "/ws"},
		{name: "sidecar to sidecar", url: "ws://" + c.addr("caller-out") + "/ws", host: "wsecho"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			eventually(t, 15*time.Second, "a WebSocket echo "+tc.name, func() error {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				return webSocketEcho(ctx, tc.url, tc.host)
			})
		})
	}
	for _, tc := range tests {
		t.Run(tc.name+": denied by a SecurityPolicy", func(t *testing.T) {
			url := strings.TrimSuffix(tc.url, "/ws") + "/private/ws"
			err := webSocketEcho(context.Background(), url, tc.host)
			if err == nil || !strings.Contains(err.Error(), "status 403") {
				t.Fatalf("upgrade to %s: %v, want 403", url, err)
			}
		})
	}
	t.Run("mTLS between the sidecars", func(t *testing.T) {
		// The wsecho sidecar's inbound listener refuses plaintext: the
		// upgrade above came over mTLS.
		err := webSocketEcho(context.Background(), "ws://"+c.addr("wsecho-in")+"/ws", "")
		if err == nil || !strings.Contains(err.Error(), "dial") {
			t.Fatalf("plaintext to the inbound listener: %v, want a failed dial", err)
		}
	})
}
