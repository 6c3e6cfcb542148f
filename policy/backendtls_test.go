package policy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// backendTLSDoc is a BackendTLSPolicy named name on the Service orders;
// validation is its spec.validation (YAML, indented four spaces).
func backendTLSDoc(name, target, validation string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: BackendTLSPolicy
metadata: {name: %s}
spec:
  targetRefs: [%s]
  validation:
%s`, name, target, validation)
}

// caConfigMap is a ConfigMap name with ca.crt (indented as a YAML block).
func caConfigMap(name, caPEM string) string {
	return fmt.Sprintf("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata:\n  ca.crt: |\n    %s\n", name,
		strings.ReplaceAll(strings.TrimSpace(caPEM), "\n", "\n    "))
}

// TestBackendTLSPolicy: a BackendTLSPolicy resolves to the TLS of its
// target's ports, with the statuses of the Gateway API: Accepted and
// ResolvedRefs on each Gateway whose routes send to the target; a policy
// without a valid CA is accepted but fails closed (NoValidCACertificate).
func TestBackendTLSPolicy(t *testing.T) {
	t.Parallel()
	caPEM, _ := testPair(t, "backend-ca", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	orders := "{group: '', kind: Service, name: orders}"
	good := "    hostname: orders.internal\n    caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]\n"
	for _, tc := range []struct {
		name     string
		docs     []string
		want     []wantStatus
		hostname string // of BackendTLSFor(orders), "" for none
		caPEM    bool
		system   bool
		sans     int
	}{
		{
			name:     "ConfigMap CA",
			docs:     []string{backendTLSDoc("tls", orders, good), caConfigMap("ca", caPEM)},
			want:     []wantStatus{{kind: KindBackendTLSPolicy, name: "tls", state: StateAccepted, conditions: []string{"Accepted=True/Accepted", "ResolvedRefs=True/ResolvedRefs"}}},
			hostname: "orders.internal", caPEM: true,
		},
		{
			name: "system CAs and subject alt names",
			docs: []string{backendTLSDoc("tls", orders, "    hostname: orders.internal\n    wellKnownCACertificates: System\n"+
				"    subjectAltNames: [{type: Hostname, hostname: '*.internal'}, {type: URI, uri: 'spiffe://td/ns/a/sa/b'}]\n")},
			want:     []wantStatus{{kind: KindBackendTLSPolicy, name: "tls", state: StateAccepted, conditions: []string{"Accepted=True/Accepted"}}},
			hostname: "orders.internal", system: true, sans: 2,
		},
		{
			name: "missing ConfigMap: no valid CA, fails closed",
			docs: []string{backendTLSDoc("tls", orders, good)},
			want: []wantStatus{{kind: KindBackendTLSPolicy, name: "tls", state: StateAccepted, reason: "NoValidCACertificate",
				conditions: []string{"Accepted=False/NoValidCACertificate", "ResolvedRefs=False/InvalidCACertificateRef"}, message: "ConfigMap default/ca: does not exist"}},
			hostname: "orders.internal",
		},
		{
			name: "not PEM",
			docs: []string{backendTLSDoc("tls", orders, good), caConfigMap("ca", "hello")},
			want: []wantStatus{{kind: KindBackendTLSPolicy, name: "tls", state: StateAccepted, reason: "NoValidCACertificate",
				conditions: []string{"ResolvedRefs=False/InvalidCACertificateRef"}, message: "not PEM"}},
			hostname: "orders.internal",
		},
		{
			name: "a Secret is not a CA kind",
			docs: []string{backendTLSDoc("tls", orders, "    hostname: orders.internal\n    caCertificateRefs: [{group: '', kind: Secret, name: ca}]\n")},
			want: []wantStatus{{kind: KindBackendTLSPolicy, name: "tls", state: StateAccepted, reason: "NoValidCACertificate",
				conditions: []string{"ResolvedRefs=False/InvalidKind"}}},
			hostname: "orders.internal",
		},
		{
			name: "second policy on the target is Conflicted",
			docs: []string{backendTLSDoc("a", orders, good), backendTLSDoc("b", orders, good), caConfigMap("ca", caPEM)},
			want: []wantStatus{
				{kind: KindBackendTLSPolicy, name: "a", state: StateAccepted, conditions: []string{"Accepted=True/Accepted"}},
				{kind: KindBackendTLSPolicy, name: "b", state: StateRejected, reason: "Conflicted", conditions: []string{"Accepted=False/Conflicted"}, message: "already has BackendTLSPolicy default/a"},
			},
			hostname: "orders.internal", caPEM: true,
		},
		{
			name: "both CA sources",
			docs: []string{backendTLSDoc("tls", orders, good+"    wellKnownCACertificates: System\n"), caConfigMap("ca", caPEM)},
			want: []wantStatus{{kind: KindBackendTLSPolicy, name: "tls", state: StateRejected, reason: "Invalid", conditions: []string{"Accepted=False/Invalid"}, message: "go alone"}},
		},
		{
			name: "unknown well-known CAs",
			docs: []string{backendTLSDoc("tls", orders, "    hostname: orders.internal\n    wellKnownCACertificates: Mine\n")},
			want: []wantStatus{{kind: KindBackendTLSPolicy, name: "tls", state: StateRejected, reason: "Invalid", message: `unknown value "Mine"`}},
		},
		{
			name: "wildcard hostname",
			docs: []string{backendTLSDoc("tls", orders, "    hostname: '*.internal'\n    wellKnownCACertificates: System\n")},
			want: []wantStatus{{kind: KindBackendTLSPolicy, name: "tls", state: StateRejected, reason: "Invalid", message: "wildcards are not allowed"}},
		},
		{
			name: "target not found",
			docs: []string{backendTLSDoc("tls", "{group: '', kind: Service, name: nope}", good), caConfigMap("ca", caPEM)},
			want: []wantStatus{{kind: KindBackendTLSPolicy, name: "tls", state: StateAccepted, reason: ReasonTargetNotFound, conditions: []string{"Accepted=False/TargetNotFound"}}},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			pairs := []string{"route", evalRoute("r", "orders", "")}
			for i, d := range tc.docs {
				pairs = append(pairs, fmt.Sprintf("doc%d", i), d)
			}
			r := Evaluate(evalInput(pairs...))
			checkStatuses(t, r, tc.want)
			bt := r.Set.BackendTLSFor("default", "orders", "", 8080)
			switch {
			case tc.hostname == "" && bt != nil:
				t.Fatalf("BackendTLSFor(orders) = %+v, want none", bt)
			case tc.hostname == "":
				return
			case bt == nil:
				t.Fatalf("BackendTLSFor(orders) = nil, want hostname %s", tc.hostname)
			}
			if bt.Hostname != tc.hostname || (len(bt.CAPEM) > 0) != tc.caPEM || bt.System != tc.system || len(bt.SubjectAltNames) != tc.sans {
				t.Errorf("BackendTLSFor(orders) = %+v; want hostname %s, CA %v, system %v, %d SANs", bt, tc.hostname, tc.caPEM, tc.system, tc.sans)
			}
		})
	}
}

// TestBackendTLSPolicyAncestors: the status of a BackendTLSPolicy has an
// ancestor for the Gateway whose route sends to its target.
func TestBackendTLSPolicyAncestors(t *testing.T) {
	t.Parallel()
	r := Evaluate(evalInput("route", evalRoute("r", "orders", ""),
		"tls", backendTLSDoc("tls", "{group: '', kind: Service, name: orders}", "    hostname: orders.internal\n    wellKnownCACertificates: System\n")))
	s := findStatus(r, KindBackendTLSPolicy, "tls")
	if s == nil || len(s.Object.Status.Ancestors) != 1 {
		t.Fatalf("status = %+v, want one ancestor", s)
	}
	a := s.Object.Status.Ancestors[0]
	if a.AncestorRef.Name != "edge" || *a.AncestorRef.Kind != KindGateway || *a.AncestorRef.Namespace != "default" || string(a.ControllerName) != ControllerName || len(a.Conditions) != 2 {
		t.Errorf("ancestor = %+v, want Gateway default/edge with Accepted and ResolvedRefs", a)
	}
}

// TestBackendTLSCAFile: a ConfigMap's CA bundle may be a PEM file named by
// annotation, relative to the policy file, and the file is watched.
func TestBackendTLSCAFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	caPEM, _ := testPair(t, "backend-ca", time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
	if err := os.WriteFile(filepath.Join(dir, "ca.pem"), []byte(caPEM), 0o600); err != nil {
		t.Fatal(err)
	}
	cm := "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ca\n  annotations: {meshgate.dev/ca-file: ca.pem}\n"
	in := evalInput("route", evalRoute("r", "orders", ""), "tls", backendTLSDoc("tls", "{group: '', kind: Service, name: orders}",
		"    hostname: orders.internal\n    caCertificateRefs: [{group: '', kind: ConfigMap, name: ca}]\n"))
	in.Files = append(in.Files, File{Name: filepath.Join(dir, "cm.yaml"), Data: []byte(cm)})
	r := Evaluate(in)
	if len(r.Errors) > 0 {
		t.Fatalf("errors: %v", r.Errors)
	}
	if bt := r.Set.BackendTLSFor("default", "orders", "", 8080); bt == nil || string(bt.CAPEM) != caPEM {
		t.Fatalf("BackendTLSFor(orders) = %+v, want the file's CA", bt)
	}
	if files := r.Set.CertificateFiles(); len(files) != 1 || files[0] != filepath.Join(dir, "ca.pem") {
		t.Errorf("CertificateFiles() = %v, want the CA file", files)
	}
}
