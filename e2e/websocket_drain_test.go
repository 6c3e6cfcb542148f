package e2e

import (
	"context"
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// TestWebSocketDrain: a gateway's graceful stop lets a WebSocket in
// progress carry on until the drain timeout (it is not cut when the
// listener closes), then closes it; the gateway exits.
func TestWebSocketDrain(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	echo := startWebSocketEcho(t)
	c.policy("ws.yaml", yamlDocs(edgeGateway, routeTo("wsecho"), fmt.Sprintf(`
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: wsecho}
spec:
  ports: [{port: 80}]
  endpoints: [{address: %q}]
`, echo)))
	c.startControlPlane()
	gw := c.gateway("edge", "--drain-timeout", "4s")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ws *websocket.Conn
	eventually(t, 15*time.Second, "a WebSocket through the gateway", func() error {
		conn, _, err := websocket.Dial(ctx, "ws://"+c.addr("gw")+"/ws", nil)
		if err != nil {
			return err
		}
		ws = conn
		return nil
	})
	defer ws.CloseNow()
	echoOnce := func(msg string) error {
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		_, got, err := ws.Read(ctx)
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if string(got) != msg {
			return fmt.Errorf("echo %q, want %q", got, msg)
		}
		return nil
	}
	if err := echoOnce("before the stop"); err != nil {
		t.Fatal(err)
	}

	stopped := time.Now()
	if err := gw.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	// The listener closes at once (no drain delay): a new connection is
	// refused, the WebSocket still carries messages.
	eventually(t, 10*time.Second, "the gateway's listener closed", func() error {
		if _, err := get("http://" + c.addr("gw") + "/"); err == nil {
			return fmt.Errorf("the listener still answers")
		}
		return nil
	})
	if err := echoOnce("during the drain"); err != nil {
		t.Fatalf("the WebSocket during the drain (%v after SIGTERM): %v", time.Since(stopped), err)
	}
	// At the drain timeout the proxy closes it, and exits.
	if _, _, err := ws.Read(ctx); err == nil {
		t.Fatal("the WebSocket carried a message after the drain; want it closed")
	}
	select {
	case <-gw.done:
	case <-ctx.Done():
		t.Fatal("the gateway did not exit after the drain timeout")
	}
	if d := time.Since(stopped); d < 3*time.Second {
		t.Errorf("the WebSocket was closed %v after SIGTERM, before the 4s drain timeout", d)
	}
}

// TestWebSocketIdleTimeout: the route's idle timeout (a TrafficPolicy's
// timeouts.idle.downstream, the route's idle_timeout) ends a WebSocket
// through the gateway that carried nothing either way for that long;
// messages keep it open meanwhile.
func TestWebSocketIdleTimeout(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	echo := startWebSocketEcho(t)
	c.policy("ws.yaml", yamlDocs(edgeGateway, routeTo("wsecho"), fmt.Sprintf(`
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata: {name: wsecho}
spec:
  ports: [{port: 80}]
  endpoints: [{address: %q}]
---
apiVersion: meshgate.dev/v1alpha1
kind: TrafficPolicy
metadata: {name: ws-idle}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: HTTPRoute, name: app}]
  timeouts: {idle: {downstream: 2s}}
`, echo)))
	c.startControlPlane()
	c.gateway("edge")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var ws *websocket.Conn
	eventually(t, 15*time.Second, "a WebSocket through the gateway", func() error {
		conn, _, err := websocket.Dial(ctx, "ws://"+c.addr("gw")+"/ws", nil)
		if err != nil {
			return err
		}
		ws = conn
		return nil
	})
	defer ws.CloseNow()
	// Talking every half second for longer than the idle timeout: open.
	var last time.Time // when the last echo came back
	for i := range 6 {
		msg := fmt.Sprintf("ping %d", i)
		if err := ws.Write(ctx, websocket.MessageText, []byte(msg)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if _, got, err := ws.Read(ctx); err != nil || string(got) != msg {
			t.Fatalf("echo %d: %q, %v", i, got, err)
		}
		last = time.Now()
		if i < 5 {
			time.Sleep(500 * time.Millisecond) // the traffic pattern under test, not a synchronisation
		}
	}
	// Then silent: closed by the gateway at the idle timeout after the
	// last bytes passed, not before (the gateway saw them a little before
	// the echo came back here).
	if _, _, err := ws.Read(ctx); err == nil {
		t.Fatal("a message on a silent WebSocket; want it closed")
	}
	if d := time.Since(last); d < 1900*time.Millisecond {
		t.Errorf("the silent WebSocket was closed %v after its last message, before the 2s idle timeout", d)
	}
}
