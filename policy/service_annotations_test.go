package policy

import (
	"os"
	"path/filepath"
	"testing"
)

// TestServiceAnnotations: a Service keeps its metadata's annotations
// (meshgate dev reads one of them).
func TestServiceAnnotations(t *testing.T) {
	file := filepath.Join(t.TempDir(), "svc.yaml")
	if err := os.WriteFile(file, []byte(`apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata:
  name: grpc-client
  annotations: {meshgate.dev/dev-proxyless-target: "greeter:9090"}
spec:
  ports: [{port: 9090, protocol: HTTP2}]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	set, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Services) != 1 || set.Services[0].Annotations["meshgate.dev/dev-proxyless-target"] != "greeter:9090" {
		t.Fatalf("services %+v, want grpc-client with its annotation", set.Services)
	}
}
