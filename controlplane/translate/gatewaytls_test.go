package translate

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"testing"

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
