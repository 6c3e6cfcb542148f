package xds

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane/translate"
	"github.com/meshgate/meshgate/policy"
)

func TestAuthorizer(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := New(ctx, nil)
	s.SetModel(ctx, testModel(t, 8080))
	notAfter := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	s.SetAuthorizer(func(ctx context.Context, node *corev3.Node) (ProxyIdentity, error) {
		if _, ok := peer.FromContext(ctx); !ok {
			return ProxyIdentity{}, errors.New("no peer in the stream context")
		}
		switch node.GetId() {
		case "intruder":
			return ProxyIdentity{}, status.Error(codes.PermissionDenied, "node metadata does not match the certificate")
		case "plain-error":
			return ProxyIdentity{}, errors.New("no certificate")
		}
		return ProxyIdentity{SPIFFEID: "spiffe://meshgate.local/ns/default/svc/orders", NotAfter: notAfter}, nil
	})
	conn := startServer(t, s)
	client := discoveryv3.NewAggregatedDiscoveryServiceClient(conn)
	sidecar := xdsnode.Metadata{Role: xdsnode.RoleSidecar, Service: "orders", InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000"}

	for _, id := range []string{"intruder", "plain-error"} {
		t.Run(id, func(t *testing.T) {
			t.Parallel()
			stream, err := client.StreamAggregatedResources(ctx)
			if err != nil {
				t.Fatal(err)
			}
			c := &adsClient{t: t, stream: stream, node: testNode(t, id, sidecar)}
			c.request(resourcev3.ListenerType, nil, nil, "")
			_, err = stream.Recv()
			if status.Code(err) != codes.PermissionDenied {
				t.Fatalf("Recv error = %v, want PermissionDenied", err)
			}
			for _, p := range s.Proxies() {
				if p.ID == id {
					t.Errorf("refused proxy is registered: %+v", p)
				}
			}
		})
	}
	t.Run("allowed", func(t *testing.T) {
		t.Parallel()
		stream, err := client.StreamAggregatedResources(ctx)
		if err != nil {
			t.Fatal(err)
		}
		c := &adsClient{t: t, stream: stream, node: testNode(t, "orders-1", sidecar)}
		c.request(resourcev3.ListenerType, nil, nil, "")
		c.receive(resourcev3.ListenerType)
		i := slices.IndexFunc(s.Proxies(), func(p ProxyStatus) bool { return p.ID == "orders-1" })
		if i < 0 {
			t.Fatal("allowed proxy is not registered")
		}
		p := s.Proxies()[i]
		if p.SPIFFEID != "spiffe://meshgate.local/ns/default/svc/orders" || !p.CertNotAfter.Equal(notAfter) || p.MTLSMode != policy.MTLSStrict {
			t.Errorf("proxy status = %+v", p)
		}
	})
}

func TestSetTrustBundle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	s := New(ctx, nil)
	s.SetModel(ctx, testModel(t, 8080))
	conn := startServer(t, s)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &adsClient{t: t, stream: stream, node: testNode(t, "orders-1", xdsnode.Metadata{
		Role: xdsnode.RoleSidecar, Service: "orders", InboundAddress: "127.0.0.1:21011", AppAddress: "127.0.0.1:9000"})}
	c.request(resourcev3.ListenerType, nil, nil, "")
	first := c.receive(resourcev3.ListenerType)
	c.request(resourcev3.ListenerType, nil, first, "")
	inboundTLS := func(resp *discoveryv3.DiscoveryResponse) bool {
		for _, a := range resp.Resources {
			l := &listenerv3.Listener{}
			if err := a.UnmarshalTo(l); err != nil {
				t.Fatal(err)
			}
			if l.Name == translate.InboundName {
				return l.FilterChains[0].TransportSocket != nil
			}
		}
		t.Fatal("no inbound listener")
		return false
	}
	if inboundTLS(first) {
		t.Fatal("inbound listener uses TLS before the mesh has a trust bundle")
	}

	bundle := []byte("-----BEGIN CERTIFICATE-----\nTUVTSEdBVEU=\n-----END CERTIFICATE-----\n")
	s.SetTrustBundle(ctx, bundle)
	second := c.receive(resourcev3.ListenerType)
	if !inboundTLS(second) {
		t.Error("inbound listener has no TLS after SetTrustBundle")
	}
	c.request(resourcev3.ListenerType, nil, second, "")
	c.request(resourcev3.SecretType, []string{translate.RootCASecretName}, nil, "")
	secrets := c.receive(resourcev3.SecretType)
	if len(secrets.Resources) != 1 {
		t.Fatalf("secrets = %d, want ROOTCA", len(secrets.Resources))
	}
	sec := &tlsv3.Secret{}
	if err := secrets.Resources[0].UnmarshalTo(sec); err != nil {
		t.Fatal(err)
	}
	if sec.Name != translate.RootCASecretName || string(sec.GetValidationContext().GetTrustedCa().GetInlineBytes()) != string(bundle) {
		t.Errorf("secret = %v", sec)
	}
	if res, _, ok := s.Resources("orders-1"); !ok || len(res.Secrets) != 1 {
		t.Errorf("Resources: secrets = %v", res)
	}
}
