package e2e

import (
	"errors"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// acceptRoute is the route name of the gateway edge: requests under path
// to backend; extra is added to its rule.
func acceptRoute(name, path, backend, extra string) string {
	return fmt.Sprintf(`apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: %s}
spec:
  parentRefs: [{name: edge}]
  rules:
    - matches: [{path: {type: PathPrefix, value: %s}}]
%s      backendRefs: [{name: %s, port: 80}]
`, name, path, extra, backend)
}

// TestPerResourceAcceptance: a gateway serves two routes from two files;
// one edit changes one route and breaks the other: the change is applied,
// the broken route keeps serving its last good version, `meshgate get`
// shows its status and `meshgate status` lists it. A backendRef to a
// missing Service answers 500 while the rest serves, and `meshgate
// validate` still fails on the files. A file that stops parsing keeps what
// it held serving; an invalid SecurityPolicy fails closed.
func TestPerResourceAcceptance(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	c.policy("services.yaml", blueGreenServices())
	c.policy("a.yaml", acceptRoute("a", "/a", "blue", ""))
	c.policy("b.yaml", acceptRoute("b", "/b", "blue", ""))
	c.app("blue", "blue", "v1", "")
	c.app("green", "green", "v1", "")
	c.startControlPlane()
	c.gateway("edge")
	gw := "http://" + c.addr("gw")
	c.expectEventually("a on blue", 15*time.Second, gw+"/a", nil, servedBy("blue"))
	c.expectEventually("b on blue", 5*time.Second, gw+"/b", nil, servedBy("blue"))

	// a moves to green; b gets a filter of an unknown type (and would move
	// to green too).
	c.policy("a.yaml", acceptRoute("a", "/a", "green", ""))
	c.policy("b.yaml", acceptRoute("b", "/b", "green", "      filters: [{type: Nope}]\n"))
	c.expectEventually("a's change applied", 15*time.Second, gw+"/a", nil, servedBy("green"))
	eventually(t, 10*time.Second, "b rejected", func() error {
		st, err := c.status()
		if err != nil {
			return err
		}
		if !strings.Contains(st.LastError, "b.yaml:") {
			return fmt.Errorf("last error %q", st.LastError)
		}
		return nil
	})
	c.expectEventually("b serves its last good version", 5*time.Second, gw+"/b", nil, servedBy("blue"))

	out, err := c.cli("get", "httproute", "b", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# " + filepath.Join(c.dir, "b.yaml") + ":1 (LastGood: UnsupportedValue)", "kind: HTTPRoute",
		"type: Accepted", `status: "False"`, "reason: UnsupportedValue", `unknown filter type "Nope"`,
		"type: meshgate.dev/LastGoodVersion", "reason: LastGoodVersionServing", "controllerName: meshgate.dev/controller", "name: green"} {
		if !strings.Contains(out, want) {
			t.Errorf("meshgate get httproute b -o yaml lacks %q:\n%s", want, out)
		}
	}
	out, err = c.cli("get", "httproutes")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "STATUS") || !regexpFields(out, "HTTPRoute default b LastGood: UnsupportedValue") || !regexpFields(out, "HTTPRoute default a Accepted") {
		t.Errorf("meshgate get httproutes:\n%s", out)
	}
	out, err = c.cli("status")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "HTTPRoute default/b: LastGood: UnsupportedValue") || !strings.Contains(out, "b.yaml:8: spec.rules[0].filters[0].type") {
		t.Errorf("meshgate status does not list b:\n%s", out)
	}

	// A route to a Service that does not exist: accepted, its rule answers
	// 500, the rest serves.
	c.policy("c.yaml", acceptRoute("c", "/c", "nowhere", ""))
	c.expectEventually("a route to a missing Service answers 500", 15*time.Second, gw+"/c", nil, func(r *response) error {
		if r.status != http.StatusInternalServerError {
			return fmt.Errorf("status %d, want 500", r.status)
		}
		return nil
	})
	c.expectEventually("a still served", 5*time.Second, gw+"/a", nil, servedBy("green"))
	out, err = c.cli("get", "httproute", "c", "-o", "yaml")
	if err != nil || !strings.Contains(out, "reason: BackendNotFound") {
		t.Errorf("meshgate get httproute c: %v\n%s", err, out)
	}

	// validate still fails on the files.
	var exit *exec.ExitError
	if out, err := exec.Command(binary, "validate", "-f", c.dir).CombinedOutput(); !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Errorf("validate: %v, want exit 1:\n%s", err, out)
	}

	// Fixing b applies it.
	c.policy("b.yaml", acceptRoute("b", "/b", "green", ""))
	c.expectEventually("b fixed", 15*time.Second, gw+"/b", nil, servedBy("green"))

	// A YAML syntax error in a's file: what the file held keeps serving.
	c.policy("a.yaml", "kind: [\n---\n"+acceptRoute("a", "/a", "blue", ""))
	eventually(t, 10*time.Second, "a's file reported", func() error {
		out, err := c.cli("get", "httproute", "a")
		if err != nil {
			return err
		}
		if !regexpFields(out, "HTTPRoute default a LastGood") {
			return fmt.Errorf("meshgate get httproute a:\n%s", out)
		}
		return nil
	})
	c.expectEventually("a serves its last good version", 5*time.Second, gw+"/a", nil, servedBy("green"))

	// An invalid SecurityPolicy without a last good version fails closed:
	// its Gateway denies every request until it is fixed.
	c.policy("guard.yaml", `apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: guard}
spec:
  targetRefs: [{kind: Gateway, name: edge}]
  rules:
    - action: ALOW
      to: [{paths: ["/admin/*"]}]
`)
	c.expectEventually("the gateway fails closed", 15*time.Second, gw+"/a", nil, func(r *response) error {
		if r.status != http.StatusForbidden {
			return fmt.Errorf("status %d, want 403", r.status)
		}
		return nil
	})
	if out, err := c.cli("get", "securitypolicy", "guard"); err != nil || !regexpFields(out, "SecurityPolicy default guard FailClosed: Invalid") {
		t.Errorf("meshgate get securitypolicy guard: %v\n%s", err, out)
	}
	c.removePolicy("guard.yaml")
	c.expectEventually("the gateway serves again", 15*time.Second, gw+"/a", nil, servedBy("green"))
}

// regexpFields reports whether some line of out has the fields of want, in
// order, separated by any spaces.
func regexpFields(out, want string) bool {
	for _, line := range strings.Split(out, "\n") {
		if strings.Contains(strings.Join(strings.Fields(line), " "), want) {
			return true
		}
	}
	return false
}
