package conformance

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"math"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

// examplesEnv names the gateway-api module's examples directory for the
// test binary re-executed in its network namespace.
const examplesEnv = "MESHGATE_EXAMPLES_DIR"

// TestExamples runs `meshgate validate` on every manifest of the Gateway API
// module's examples/ directory (read from the module cache: the version
// meshgate's go.mod requires), with a stub meshgate Service for every
// backend the manifests name, and compares the outcome per file with
// examples.yaml. The examples meshgate accepts are then served by
// `meshgate dev` (in a network namespace of their own: they listen on port
// 80): every HTTPRoute rule with a Gateway parent gets one request, which the
// stub of one of its backends must answer (or a redirect, for a redirect
// rule).
//
// Each file is validated on its own, with the files of its example (its
// directory below standard/ or experimental/) that define the Gateways its
// routes attach to: the files of a directory are often alternatives (several
// versions of one route), not one set.
func TestExamples(t *testing.T) {
	if testing.Short() {
		t.Skip("runs meshgate processes (skipped with -short)")
	}
	if os.Getenv(netnsEnv) != "" {
		runExamples(t)
		return
	}
	out, err := exec.Command("go", "-C", "../..", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/gateway-api").Output()
	if err != nil {
		t.Fatalf("finding the gateway-api module: %v", err)
	}
	dir := filepath.Join(strings.TrimSpace(string(out)), "examples")
	env, err := buildBinaries(t)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run", "^TestExamples$", "-test.v", "-test.timeout", "20m")
	cmd.Env = append(env, netnsEnv+"=1", examplesEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWNET, Pdeathsig: syscall.SIGKILL}
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	err = cmd.Run()
	sc := bufio.NewScanner(&buf)
	for sc.Scan() {
		if line := sc.Text(); !strings.HasPrefix(line, "=== ") {
			t.Log(line)
		}
	}
	if err != nil {
		t.Errorf("the examples run in a network namespace failed: %v", err)
	}
}

// exampleExpectation is one entry of examples.yaml.
type exampleExpectation struct {
	// Result is accepted (no error), partial (every resource of the file
	// accepted, with errors: a reference that does not resolve, whose
	// backend answers 500, or a parent it is not attached to) or rejected
	// (a resource of the file is not accepted).
	Result string `json:"result"`
	Reason string `json:"reason,omitempty"` // meshgate's first message, unless accepted
	Needs  string `json:"needs,omitempty"`  // the issue that will make it accepted
}

func runExamples(t *testing.T) {
	root := os.Getenv(examplesEnv)
	data, err := os.ReadFile("examples.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var want map[string]exampleExpectation
	if err := yaml.UnmarshalStrict(data, &want); err != nil {
		t.Fatalf("examples.yaml: %v", err)
	}
	groups, err := exampleGroups(root)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var table []string
	for _, g := range groups {
		docsOf := map[string][]map[string]any{}
		for _, f := range g {
			b, err := os.ReadFile(filepath.Join(root, f))
			if err != nil {
				t.Fatal(err)
			}
			docsOf[f] = splitDocs(b)
		}
		for _, f := range g {
			seen[f] = true
			files := append([]string{f}, gatewayContext(f, g, docsOf)...)
			dir := t.TempDir()
			var docs []map[string]any
			for _, c := range files {
				b, err := os.ReadFile(filepath.Join(root, c))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, flatName(c)), b, 0o644); err != nil {
					t.Fatal(err)
				}
				docs = append(docs, docsOf[c]...)
			}
			stubs := append(stubServices(docs), stubSecrets(t, docs)...)
			if err := os.WriteFile(filepath.Join(dir, "zz-stubs.yaml"), stubs, 0o644); err != nil {
				t.Fatal(err)
			}
			report, err := validateJSON(dir)
			if err != nil {
				t.Fatal(err)
			}
			if msgs := report.errorsOf("zz-stubs.yaml"); len(msgs) > 0 {
				t.Errorf("%s: the runner's stub Services are invalid: %v", f, msgs)
			}
			got := exampleExpectation{Result: "accepted"}
			if msgs := report.errorsOf(flatName(f)); len(msgs) > 0 {
				got = exampleExpectation{Result: "partial", Reason: msgs[0]}
				if report.rejects(flatName(f)) {
					got.Result = "rejected"
				}
			}
			w, ok := want[f]
			switch {
			case !ok:
				t.Errorf("%s: not in examples.yaml; measured: %s %s", f, got.Result, got.Reason)
			case w.Result != got.Result || got.Result != "accepted" && w.Reason != got.Reason:
				t.Errorf("%s: examples.yaml says %s (%s), measured %s (%s): update the file", f, w.Result, w.Reason, got.Result, got.Reason)
			}
			table = append(table, fmt.Sprintf("| %s | %s | %s |", f, got.Result, strings.ReplaceAll(got.Reason, "|", "\\|")))
			if !report.rejects("") {
				serveExample(t, f, dir, docs)
			}
		}
	}
	for f := range want {
		if !seen[f] {
			t.Errorf("examples.yaml names %s, which the module's examples do not have", f)
		}
	}
	t.Logf("examples table:\n%s", strings.Join(table, "\n"))
}

// exampleGroups lists the examples: each directory below standard/ or
// experimental/ is one group (its YAML files, recursively); each file
// directly in them is a group of its own.
func exampleGroups(root string) ([][]string, error) {
	byGroup := map[string][]string{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(p, ".yaml") {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		parts := strings.Split(rel, string(filepath.Separator))
		key := rel
		if len(parts) > 2 {
			key = filepath.Join(parts[0], parts[1])
		}
		byGroup[key] = append(byGroup[key], rel)
		return nil
	})
	var keys []string
	for k := range byGroup {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out [][]string
	for _, k := range keys {
		sort.Strings(byGroup[k])
		out = append(out, byGroup[k])
	}
	return out, err
}

// gatewayContext is the other files of f's group that define a Gateway one
// of f's documents names as a parent (and f does not define), or
// Namespaces (their labels).
func gatewayContext(f string, group []string, docsOf map[string][]map[string]any) []string {
	own := map[string]bool{}
	wanted := map[string]bool{}
	for _, d := range docsOf[f] {
		ns := str(d, "metadata", "namespace")
		if ns == "" {
			ns = "default"
		}
		if d["kind"] == "Gateway" {
			own[ns+"/"+str(d, "metadata", "name")] = true
		}
		spec, _ := d["spec"].(map[string]any)
		for _, p := range list(spec["parentRefs"]) {
			if kind, _ := p["kind"].(string); kind == "" || kind == "Gateway" {
				r := refOf(p, ns)
				wanted[r.namespace+"/"+r.name] = true
			}
		}
	}
	var out []string
	for _, other := range group {
		if other == f {
			continue
		}
		// The namespaces' labels, which allowedRoutes selectors match.
		if slices.ContainsFunc(docsOf[other], func(d map[string]any) bool { return d["kind"] == "Namespace" }) {
			out = append(out, other)
			continue
		}
		for _, d := range docsOf[other] {
			ns := str(d, "metadata", "namespace")
			if ns == "" {
				ns = "default"
			}
			k := ns + "/" + str(d, "metadata", "name")
			if d["kind"] == "Gateway" && wanted[k] && !own[k] {
				out = append(out, other)
				own[k] = true // the first file defining it
				break
			}
		}
	}
	return out
}

// flatName is a file's name in the flat policy directory.
func flatName(rel string) string { return strings.ReplaceAll(rel, string(filepath.Separator), "__") }

func splitDocs(b []byte) []map[string]any {
	var out []map[string]any
	for _, part := range bytes.Split(b, []byte("\n---")) {
		var m map[string]any
		if yaml.Unmarshal(part, &m) == nil && m != nil {
			out = append(out, m)
		}
	}
	return out
}

// stubPortBase: stub endpoints listen on the ports after it.
const stubPortBase = 20000

// ref is a reference found in a manifest.
type ref struct {
	namespace, name string
	port            int
}

// stubServices is a meshgate Service for every Service the documents name
// as a backend (or as a mesh route's parent), in the namespace the
// reference resolves to, with the ports referenced (80 when none) and one
// loopback endpoint per port, each a sidecar's inbound address: `meshgate
// dev` starts a demo app behind it that answers with the service's name.
func stubServices(docs []map[string]any) []byte {
	ports := map[[2]string]map[int]bool{}
	add := func(r ref) {
		k := [2]string{r.namespace, r.name}
		if ports[k] == nil {
			ports[k] = map[int]bool{}
		}
		if r.port != 0 {
			ports[k][r.port] = true
		}
	}
	for _, d := range docs {
		ns := str(d, "metadata", "namespace")
		if ns == "" {
			ns = "default"
		}
		spec, _ := d["spec"].(map[string]any)
		for _, p := range list(spec["parentRefs"]) {
			if kind, _ := p["kind"].(string); kind == "Service" {
				add(refOf(p, ns))
			}
		}
		for _, rule := range list(spec["rules"]) {
			for _, b := range list(rule["backendRefs"]) {
				if kind, _ := b["kind"].(string); kind == "" || kind == "Service" {
					add(refOf(b, ns))
				}
			}
		}
	}
	keys := make([][2]string, 0, len(ports))
	for k := range ports {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b [2]string) int { return strings.Compare(a[0]+"/"+a[1], b[0]+"/"+b[1]) })
	var b strings.Builder
	next := stubPortBase
	for _, k := range keys {
		var ps []int
		for p := range ports[k] {
			ps = append(ps, p)
		}
		if len(ps) == 0 {
			ps = []int{80}
		}
		sort.Ints(ps)
		fmt.Fprintf(&b, "---\napiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: %s, namespace: %s}\nspec:\n  ports:\n", k[1], k[0])
		for _, p := range ps {
			fmt.Fprintf(&b, "    - {name: p%d, port: %d}\n", p, p)
		}
		b.WriteString("  endpoints:\n")
		for _, p := range ps {
			// Fixed ports below the ephemeral range: the network namespace
			// is the test's own, and a port picked free now could be taken
			// by one `meshgate dev` picks for its demo apps.
			next++
			fmt.Fprintf(&b, "    - {address: \"127.0.0.1:%d\", port: p%d, sidecar: true}\n", next, p)
		}
	}
	return []byte(b.String())
}

// stubSecrets is a kubernetes.io/tls Secret for every Secret the Gateway
// (and ListenerSet) listeners of the documents name in certificateRefs and
// the documents do not define, as a user would create it next to the
// example: one self-signed certificate for every name (meshgate checks
// that it parses, is not expired and matches its key).
func stubSecrets(t *testing.T, docs []map[string]any) []byte {
	defined := map[string]bool{}
	for _, d := range docs {
		if d["kind"] == "Secret" {
			ns := str(d, "metadata", "namespace")
			if ns == "" {
				ns = "default"
			}
			defined[ns+"/"+str(d, "metadata", "name")] = true
		}
	}
	var wanted []string
	for _, d := range docs {
		if d["kind"] != "Gateway" && d["kind"] != "ListenerSet" {
			continue
		}
		ns := str(d, "metadata", "namespace")
		if ns == "" {
			ns = "default"
		}
		spec, _ := d["spec"].(map[string]any)
		for _, l := range list(spec["listeners"]) {
			tls, _ := l["tls"].(map[string]any)
			for _, c := range list(tls["certificateRefs"]) {
				if kind, _ := c["kind"].(string); kind != "" && kind != "Secret" {
					continue
				}
				r := refOf(c, ns)
				if k := r.namespace + "/" + r.name; !defined[k] && !slices.Contains(wanted, k) {
					wanted = append(wanted, k)
				}
			}
		}
	}
	if len(wanted) == 0 {
		return nil
	}
	sort.Strings(wanted)
	certPEM, keyPEM := selfSigned(t)
	var b strings.Builder
	for _, k := range wanted {
		ns, name, _ := strings.Cut(k, "/")
		fmt.Fprintf(&b, "---\napiVersion: v1\nkind: Secret\nmetadata: {name: %s, namespace: %s}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n%s  tls.key: |\n%s",
			name, ns, indent(certPEM, "    "), indent(keyPEM, "    "))
	}
	return []byte(b.String())
}

// selfSigned is a self-signed certificate for *.example.com and
// example.com, valid for a day, and its key, in PEM.
func selfSigned(t *testing.T) (certPEM, keyPEM string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "example.com"},
		DNSNames:     []string{"example.com", "*.example.com"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})),
		string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))
}

// indent prefixes every line of s with prefix.
func indent(s, prefix string) string {
	var b strings.Builder
	for _, line := range strings.SplitAfter(s, "\n") {
		if line != "" {
			b.WriteString(prefix + line)
		}
	}
	return b.String()
}

func refOf(m map[string]any, ns string) ref {
	r := ref{namespace: ns}
	r.name, _ = m["name"].(string)
	if n, _ := m["namespace"].(string); n != "" {
		r.namespace = n
	}
	if p, ok := m["port"].(float64); ok {
		r.port = int(p)
	}
	return r
}

func list(v any) []map[string]any {
	items, _ := v.([]any)
	var out []map[string]any
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			out = append(out, m)
		}
	}
	return out
}

func str(m map[string]any, path ...string) string {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = mm[p]
	}
	s, _ := cur.(string)
	return s
}

// probe is one request for one route rule, and what must answer it.
type probe struct {
	what     string
	url      string
	host     string
	method   string
	headers  map[string]string
	backends []string // demo services that may answer (200)
	// unresolved: the rule also has backends that do not resolve (a kind
	// other than Service), whose share is answered 500.
	unresolved bool
	redirect   int // or this redirect status
}

// serveExample runs `meshgate dev` on an accepted example and sends one
// request per HTTPRoute rule that has a Gateway parent.
func serveExample(t *testing.T, name, dir string, docs []map[string]any) {
	probes := probesFor(docs)
	if len(probes) == 0 {
		return
	}
	// Fixed ports below the ephemeral range (the namespace is the test's
	// own, and the examples are served one at a time): two ports picked
	// free one after the other can be the same one.
	admin := "127.0.0.1:15000"
	cmd := exec.Command(bins.meshgate, "dev", "--config", dir, "--xds-address", "127.0.0.1:15010", "--admin-address", admin)
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	}()
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, p := range probes {
		var last string
		ok := false
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) { // polling with a deadline
			last = p.try(client)
			if last == "" {
				ok = true
				break
			}
		}
		if !ok {
			t.Errorf("%s: %s: %s\n---- meshgate dev:\n%s", name, p.what, last, out.String())
			return
		}
		t.Logf("%s: %s: answered as expected", name, p.what)
	}
}

// try sends the probe's request and returns what was wrong, or "".
func (p probe) try(c *http.Client) string {
	req, err := http.NewRequest(p.method, p.url, nil)
	if err != nil {
		return err.Error()
	}
	req.Host = p.host
	for k, v := range p.headers {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		return err.Error()
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if p.redirect != 0 {
		if resp.StatusCode != p.redirect {
			return fmt.Sprintf("want redirect %d, got %d: %.200s", p.redirect, resp.StatusCode, body)
		}
		return ""
	}
	var reply struct {
		Service string `json:"service"`
	}
	_ = json.Unmarshal(body, &reply)
	if p.unresolved && resp.StatusCode == http.StatusInternalServerError {
		return ""
	}
	if resp.StatusCode != http.StatusOK || !slices.Contains(p.backends, reply.Service) {
		return fmt.Sprintf("want 200 from one of %v, got %d from %q: %.200s", p.backends, resp.StatusCode, reply.Service, body)
	}
	return ""
}

// probesFor derives one request per HTTPRoute rule with a Gateway parent:
// the rule's first match (path, headers, query, method), the route's first
// hostname (a wildcard's * replaced), sent to the listener's port.
func probesFor(docs []map[string]any) []probe {
	type listener struct {
		name     string
		port     int
		hostname string
		addr     string
	}
	listeners := map[string][]listener{} // namespace/gateway
	foreign := map[string]bool{}         // GatewayClasses of other controllers
	for _, d := range docs {
		if d["kind"] == "GatewayClass" && str(d, "spec", "controllerName") != controllerName {
			foreign[str(d, "metadata", "name")] = true
		}
	}
	for _, d := range docs {
		if d["kind"] != "Gateway" || foreign[str(d, "spec", "gatewayClassName")] {
			continue // not meshgate's: not served
		}
		ns := str(d, "metadata", "namespace")
		if ns == "" {
			ns = "default"
		}
		spec, _ := d["spec"].(map[string]any)
		addr := "127.0.0.1"
		for _, a := range list(spec["addresses"]) {
			if v, _ := a["value"].(string); v != "" {
				addr = v
			}
		}
		for _, l := range list(spec["listeners"]) {
			if l["protocol"] != "HTTP" {
				continue // the others are not served yet
			}
			port, _ := l["port"].(float64)
			host, _ := l["hostname"].(string)
			listeners[ns+"/"+str(d, "metadata", "name")] = append(listeners[ns+"/"+str(d, "metadata", "name")], listener{name: str(l, "name"), port: int(port), hostname: host, addr: addr})
		}
	}
	var out []probe
	for _, d := range docs {
		if d["kind"] != "HTTPRoute" {
			continue
		}
		ns := str(d, "metadata", "namespace")
		if ns == "" {
			ns = "default"
		}
		spec, _ := d["spec"].(map[string]any)
		var ls []listener
		for _, p := range list(spec["parentRefs"]) {
			if kind, _ := p["kind"].(string); kind != "" && kind != "Gateway" {
				continue
			}
			r := refOf(p, ns)
			for _, l := range listeners[r.namespace+"/"+r.name] {
				if section, _ := p["sectionName"].(string); section != "" && section != l.name {
					continue
				}
				if r.port == 0 || r.port == l.port {
					ls = append(ls, l)
				}
			}
		}
		if len(ls) == 0 {
			continue
		}
		l := ls[0]
		host := "example.test"
		if hs, _ := spec["hostnames"].([]any); len(hs) > 0 {
			host, _ = hs[0].(string)
		} else if l.hostname != "" {
			host = l.hostname
		}
		host = strings.Replace(host, "*", "probe", 1)
		for i, rule := range list(spec["rules"]) {
			p := probe{what: fmt.Sprintf("HTTPRoute %s rule %d", str(d, "metadata", "name"), i), method: http.MethodGet, headers: map[string]string{}, host: host}
			path := "/"
			query := url.Values{}
			if ms := list(rule["matches"]); len(ms) > 0 {
				m := ms[0]
				if pm, ok := m["path"].(map[string]any); ok {
					if typ, _ := pm["type"].(string); typ == "RegularExpression" {
						continue // no request derived from an expression
					}
					if v, _ := pm["value"].(string); v != "" {
						path = v
					}
				}
				for _, h := range list(m["headers"]) {
					if typ, _ := h["type"].(string); typ == "RegularExpression" {
						continue
					}
					p.headers[str(h, "name")] = str(h, "value")
				}
				for _, q := range list(m["queryParams"]) {
					query.Set(str(q, "name"), str(q, "value"))
				}
				if meth, _ := m["method"].(string); meth != "" {
					p.method = meth
				}
			}
			for _, f := range list(rule["filters"]) {
				if f["type"] == "RequestRedirect" {
					p.redirect = http.StatusFound
					if rr, ok := f["requestRedirect"].(map[string]any); ok {
						if code, ok := rr["statusCode"].(float64); ok {
							p.redirect = int(code)
						}
					}
				}
			}
			for _, b := range list(rule["backendRefs"]) {
				if w, ok := b["weight"].(float64); ok && w == 0 {
					continue
				}
				if kind, _ := b["kind"].(string); kind != "" && kind != "Service" {
					p.unresolved = true
					continue
				}
				p.backends = append(p.backends, str(b, "name"))
			}
			if p.redirect == 0 && len(p.backends) == 0 && !p.unresolved {
				continue
			}
			u := "http://" + net.JoinHostPort(l.addr, strconv.Itoa(l.port)) + path
			if len(query) > 0 {
				u += "?" + query.Encode()
			}
			p.url = u
			out = append(out, p)
		}
	}
	return out
}

// validateReport is what `meshgate validate -o json` prints.
type validateReport struct {
	Errors    []string `json:"errors"`
	Resources []struct {
		File  string `json:"file"`
		Line  int    `json:"line"`
		State string `json:"state"`
	} `json:"resources"`
	dir string
}

// validateJSON runs `meshgate validate -o json` on dir.
func validateJSON(dir string) (*validateReport, error) {
	var out, stderr bytes.Buffer
	cmd := exec.Command(bins.meshgate, "validate", "-o", "json", "-f", dir)
	cmd.Stdout, cmd.Stderr = &out, &stderr
	runErr := cmd.Run()
	r := &validateReport{dir: dir}
	if err := json.Unmarshal(out.Bytes(), r); err != nil {
		return nil, fmt.Errorf("meshgate validate -o json: %v (%v): %s%s", err, runErr, out.String(), stderr.String())
	}
	if (runErr != nil) != (len(r.Errors) > 0) {
		return nil, fmt.Errorf("meshgate validate -o json: exit %v with %d errors", runErr, len(r.Errors))
	}
	return r, nil
}

// validateError is an error of the report: its file (flat name), line
// and message.
var validateError = regexp.MustCompile(`^(?:.*/)?([^/:]+\.yaml):(\d+): (.*)$`)

// errorsOf are the errors about the file name (flat, in the report's
// directory), without the directory.
func (r *validateReport) errorsOf(name string) []string {
	var out []string
	for _, e := range r.Errors {
		if m := validateError.FindStringSubmatch(e); m != nil && m[1] == name {
			out = append(out, strings.ReplaceAll(m[3], r.dir+"/", ""))
		}
	}
	return out
}

// rejects reports whether the file name (any file, for "") has a resource
// that is not served: one the report says is rejected, or an error that
// belongs to no resource the control plane accepted (a kind it does not
// serve, a document it cannot read).
func (r *validateReport) rejects(name string) bool {
	for _, e := range r.Errors {
		m := validateError.FindStringSubmatch(e)
		if m == nil {
			return true
		}
		if name != "" && m[1] != name {
			continue
		}
		line, _ := strconv.Atoi(m[2])
		from, to := r.document(m[1], line)
		state := ""
		for _, res := range r.Resources { // the resource of that document
			if filepath.Base(res.File) == m[1] && res.Line >= from && res.Line <= to {
				state = res.State
			}
		}
		if state != "Accepted" {
			return true
		}
	}
	for _, res := range r.Resources {
		if res.State == "Rejected" && (name == "" || filepath.Base(res.File) == name) {
			return true
		}
	}
	return false
}

// document returns the first and last lines of the YAML document of the
// file name (in the report's directory) that holds line: the lines
// between the "---" separators around it.
func (r *validateReport) document(name string, line int) (from, to int) {
	data, err := os.ReadFile(filepath.Join(r.dir, name))
	if err != nil {
		return 0, 0
	}
	from, to = 1, math.MaxInt
	for i, l := range strings.Split(string(data), "\n") {
		n := i + 1
		if !strings.HasPrefix(l, "---") {
			continue
		}
		if n < line {
			from = n + 1
		} else if n > line {
			return from, n - 1
		}
	}
	return from, to
}
