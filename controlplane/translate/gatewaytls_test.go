package translate

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/meshgate/meshgate/controlplane/model"
)

// TestConfigDumpRedactsKeys: the JSON of a node's resources (the control
// plane's /config_dump) shows a listener certificate but never its key,
// and leaves the served secret as it was.
func TestConfigDumpRedactsKeys(t *testing.T) {
	t.Parallel()
	key := []byte("-----BEGIN PRIVATE KEY-----\nc2VjcmV0LWtleS1tYXRlcmlhbA==\n-----END PRIVATE KEY-----\n")
	s := listenerCertificateSecret(&model.Certificate{Secret: "default/shop", CertPEM: []byte("CERT"), KeyPEM: key})
	res := &Resources{Secrets: []*tlsv3.Secret{s}}
	out, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	for _, leak := range [][]byte{key, []byte(base64.StdEncoding.EncodeToString(key)), []byte("c2VjcmV0LWtleS1tYXRlcmlhbA")} {
		if bytes.Contains(out, leak) {
			t.Fatalf("config dump shows the key: %s", out)
		}
	}
	if !bytes.Contains(out, []byte(RedactedKey)) || !bytes.Contains(out, []byte("listener-cert/default/shop")) {
		t.Errorf("config dump = %s, want the secret with its key redacted", out)
	}
	if !bytes.Equal(s.GetTlsCertificate().GetPrivateKey().GetInlineBytes(), key) {
		t.Error("redacting modified the served secret")
	}
}

// TestTerminateTLSChallengeChain: a TLS-ALPN-01 challenge chain matches
// its server name and application_protocols [acme-tls/1], offers only
// acme-tls/1 and presents the challenge certificate; it is never the
// default chain (the first listener's is), and alone on a port it makes
// no default chain.
func TestTerminateTLSChallengeChain(t *testing.T) {
	t.Parallel()
	challenge := &model.TLSChain{Listener: "default/edge/shop/acme-tls-alpn-01", Hostname: "shop.example.com", MinVersion: "1.2",
		ApplicationProtocols: []string{model.ACMETLSALPNProtocol},
		Certificates:         []*model.Certificate{{Secret: model.ACMEChallengeSecret("shop.example.com"), CertPEM: []byte("C"), KeyPEM: []byte("K")}}}
	shop := &model.TLSChain{Listener: "default/edge/shop", Hostname: "shop.example.com", MinVersion: "1.2",
		Certificates: []*model.Certificate{{Secret: model.ACMECertificateSecret("shop.example.com"), CertPEM: []byte("C"), KeyPEM: []byte("K")}}}
	listener := func() *listenerv3.Listener {
		return &listenerv3.Listener{Name: "l", FilterChains: []*listenerv3.FilterChain{{}}}
	}
	tests := []struct {
		name   string
		chains []*model.TLSChain
		// want: each chain as name server_names application_protocols alpn
		want []string
	}{
		{name: "alone", chains: []*model.TLSChain{challenge},
			want: []string{"default/edge/shop/acme-tls-alpn-01 [shop.example.com] [acme-tls/1] [acme-tls/1]"}},
		{name: "challenge first", chains: []*model.TLSChain{challenge, shop}, want: []string{
			"default/edge/shop/acme-tls-alpn-01 [shop.example.com] [acme-tls/1] [acme-tls/1]",
			"default/edge/shop [shop.example.com] [] [h2 http/1.1]",
			"default/edge/shop/default [] [] [h2 http/1.1]",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l := listener()
			secrets, err := terminateTLS(l, &model.PortTLS{Chains: tt.chains})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range l.FilterChains {
				var ctx tlsv3.DownstreamTlsContext
				if err := c.TransportSocket.GetTypedConfig().UnmarshalTo(&ctx); err != nil {
					t.Fatal(err)
				}
				got = append(got, fmt.Sprintf("%s %v %v %v", c.Name, c.FilterChainMatch.GetServerNames(), c.FilterChainMatch.GetApplicationProtocols(), ctx.GetCommonTlsContext().GetAlpnProtocols()))
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("chains\n%q\nwant\n%q", got, tt.want)
			}
			if secrets[0].Name != "listener-cert/acme-challenge/shop.example.com" {
				t.Errorf("secrets %v", secrets)
			}
		})
	}
}
