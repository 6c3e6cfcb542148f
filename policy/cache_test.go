package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// sameResult fails the test unless a load through a Cache returned what the
// plain load returned: deep-equal Sets (Sources with their field lines
// included) and the same errors in the same order.
func sameResult(t testing.TB, what string, gotSet *Set, gotErr error, wantSet *Set, wantErr error) {
	t.Helper()
	if (gotErr == nil) != (wantErr == nil) {
		t.Fatalf("%s: cache error %v, plain error %v", what, gotErr, wantErr)
	}
	if wantErr != nil {
		var got, want ErrorList
		if !errors.As(gotErr, &got) || !errors.As(wantErr, &want) {
			t.Fatalf("%s: errors are %T and %T, want ErrorLists", what, gotErr, wantErr)
		}
		if gotErr.Error() != wantErr.Error() || !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: cache errors\n%v\nplain errors\n%v", what, gotErr, wantErr)
		}
	}
	if !reflect.DeepEqual(gotSet, wantSet) {
		t.Fatalf("%s: the cache's set differs from the plain load's", what)
	}
}

// checkFiles loads files with LoadFiles and through c, and compares.
func checkFiles(t testing.TB, what string, c *Cache, files []File) {
	t.Helper()
	wantSet, wantErr := LoadFiles(files...)
	gotSet, gotErr := c.LoadFiles(files...)
	sameResult(t, what, gotSet, gotErr, wantSet, wantErr)
}

// testInputs lists every file and directory of testdata and the quickstart
// example: good and bad.
func testInputs(t *testing.T) []string {
	t.Helper()
	inputs := []string{filepath.Join("..", "examples", "quickstart")}
	err := filepath.WalkDir("testdata", func(path string, d os.DirEntry, err error) error {
		if err != nil || path == "testdata" {
			return err
		}
		if d.IsDir() || strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml") {
			inputs = append(inputs, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return inputs
}

// documentStarts returns the offsets of the "---" lines of data.
func documentStarts(data []byte) []int {
	var out []int
	for i := 0; i < len(data); {
		if (i == 0 || data[i-1] == '\n') && bytes.HasPrefix(data[i:], []byte("---")) {
			out = append(out, i)
		}
		j := bytes.IndexByte(data[i:], '\n')
		if j < 0 {
			break
		}
		i += j + 1
	}
	return out
}

func insertAt(data []byte, at int, text string) []byte {
	return append(append(append([]byte(nil), data[:at]...), text...), data[at:]...)
}

// edits are changes a policy goes through between two reloads, applied to
// the file of most documents.
var edits = []struct {
	name string
	edit func(data []byte) []byte
}{
	{"unchanged", func(data []byte) []byte { return data }},
	{"edit the last document", func(data []byte) []byte {
		i := bytes.LastIndex(data, []byte("name: "))
		if i < 0 {
			return append(bytes.Clone(data), "\n# edited\n"...)
		}
		return insertAt(data, i+len("name: "), "x")
	}},
	{"add a line before the second document", func(data []byte) []byte {
		starts := documentStarts(data)
		if len(starts) < 2 {
			return insertAt(data, 0, "# a new first line\n")
		}
		return insertAt(data, starts[1], "# a new line\n")
	}},
	{"add a document", func(data []byte) []byte {
		return append(bytes.Clone(data), "\n---\napiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: added}\nspec: {ports: [{port: 80}]}\n"...)
	}},
	{"introduce a YAML syntax error", func(data []byte) []byte {
		starts := documentStarts(data)
		at := 0
		if len(starts) >= 2 {
			at = starts[1] + len("---\n")
		}
		return insertAt(data, at, "key: [unclosed\n")
	}},
	{"introduce an unknown field", func(data []byte) []byte {
		i := bytes.Index(data, []byte("\nspec:\n"))
		if i < 0 {
			return append(bytes.Clone(data), "\n---\nkind: Nothing\n"...)
		}
		return insertAt(data, i+len("\nspec:\n"), "  bogus: 1\n")
	}},
	{"introduce a duplicate", func(data []byte) []byte {
		starts := documentStarts(data)
		if len(starts) == 0 {
			return append(append(bytes.Clone(data), "\n---\n"...), data...)
		}
		return append(bytes.Clone(data), data[starts[0]:]...)
	}},
	{"fix", func(data []byte) []byte { return data }},
}

// TestCacheMatchesLoad loads every test input through a Cache, twice, then
// through a series of edits, and checks that each load returns what Load and
// LoadFiles return.
func TestCacheMatchesLoad(t *testing.T) {
	t.Parallel()
	for _, path := range testInputs(t) {
		t.Run(path, func(t *testing.T) {
			c := NewCache()
			for i := range 2 {
				wantSet, wantErr := Load(path)
				gotSet, gotErr := c.Load(path)
				sameResult(t, fmt.Sprintf("Load #%d", i+1), gotSet, gotErr, wantSet, wantErr)
			}
			before := c.decoded
			c.Load(path)
			if c.decoded != before {
				t.Errorf("loading unchanged files decoded %d documents, want 0", c.decoded-before)
			}

			files, errs := readPaths([]string{path})
			if len(errs) > 0 {
				t.Fatal(errs)
			}
			most := 0
			for i, f := range files {
				if len(documentStarts(f.Data)) > len(documentStarts(files[most].Data)) {
					most = i
				}
			}
			original := files[most].Data
			for _, e := range edits {
				files[most].Data = e.edit(original)
				checkFiles(t, e.name, c, files)
				checkFiles(t, e.name+", again", c, files)
			}
			// Another file of the same contents: names are part of the key.
			files[most].Name += ".renamed.yaml"
			checkFiles(t, "renamed", c, files)
		})
	}
}

// TestCacheUnusualFiles checks files the cache must not split (and some it
// may) and that it returns what LoadFiles returns for them, including after
// the file changes.
func TestCacheUnusualFiles(t *testing.T) {
	t.Parallel()
	const svc = "apiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: %s}\nspec: {ports: [{port: 80}]}\n"
	a, b := fmt.Sprintf(svc, "a"), fmt.Sprintf(svc, "b")
	tests := []struct {
		name  string
		data  string
		split bool // decoded document by document
	}{
		{"plain", a + "---\n" + b, true},
		{"leading ---", "---\n" + a + "---\n" + b, true},
		{"comment first", "# services\n\n---\n" + a, true},
		{"--- with a comment", "--- # first\n" + a + "---   # second\n" + b, true},
		{"--- with spaces", "---  \n" + a + "---\n" + b, true},
		{"empty documents", "---\n---\n" + a + "---\n\n---\n", true},
		{"no final newline", a + "---\n" + strings.TrimSuffix(b, "\n"), true},
		{"anchors within a document", "apiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: a, labels: &l {x: y}}\nspec:\n  ports: [{port: 80}]\n  endpoints: [{address: 10.0.0.1:80, labels: *l}]\n", true},
		{"not UTF-8 at all", a + "---\n" + b + "# \xff\n", false},
		{"alias to an earlier document", "x: &x {port: 80}\n---\napiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [*x]}\n", false},
		{"directive", "%YAML 1.1\n---\n" + a, false},
		{"document end marker", a + "...\n---\n" + b, false},
		{"content after ---", "--- " + strings.ReplaceAll(strings.TrimSuffix(a, "\n"), "\n", ", ") + "\n", false},
		{"--- then a tab", a + "---\t\n" + b, false},
		{"byte-order mark", "\ufeff" + a + "---\n" + b, false},
		{"CRLF", strings.ReplaceAll(a+"---\n"+b, "\n", "\r\n"), false},
		{"NEL", a + "---\n" + b + "# \u0085\n", false},
		{"control character in a later document", a + "---\n" + b + "# \x01\n", false},
		{"syntax error in the first document", "a: [\n---\n" + b, false},
		{"syntax error in the last document", a + "---\n" + "a: : b\n  c\n", false},
		{"unclosed quote across ---", "x: \"a\n---\nb\"\n", false},
		{"unclosed flow across ---", "x: [a,\n---\n]\n", false},
		{"block scalar before ---", "x: |\n  text\n---\n" + b, true},
		{"merge key at the root", "<<: {a: b}\n" + a, true},
		{"duplicate across documents", a + "---\n" + a, true},
		{"empty file", "", true},
		{"only comments", "# nothing\n", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := NewCache()
			f := File{Name: "unusual.yaml", Data: []byte(tt.data)}
			checkFiles(t, "first load", c, []File{f})
			_, whole := c.files[f.Name]
			if whole == tt.split {
				t.Errorf("decoded whole: %v, want %v", whole, !tt.split)
			}
			decoded := c.decoded
			checkFiles(t, "second load", c, []File{f})
			if c.decoded != decoded {
				t.Errorf("second load decoded %d documents, want 0", c.decoded-decoded)
			}
			// A change before, and after, every document.
			for _, data := range []string{"# new\n" + tt.data, tt.data + "\n---\n" + b, tt.data} {
				checkFiles(t, "changed", c, []File{{Name: f.Name, Data: []byte(data)}})
			}
		})
	}
}

// TestCacheReusesDocuments checks what is decoded again: the changed
// document, the documents whose line moved, and nothing else.
func TestCacheReusesDocuments(t *testing.T) {
	t.Parallel()
	build := func(prefix string, n int, port int) []byte {
		var b bytes.Buffer
		for i := range n {
			fmt.Fprintf(&b, "---\napiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata:\n  name: %s-%d\nspec:\n  ports: [{port: 80}]\n  endpoints:\n  - address: 10.0.0.1:%d\n", prefix, i, port)
		}
		return b.Bytes()
	}
	files := []File{{Name: "a.yaml", Data: build("a", 10, 8080)}, {Name: "b.yaml", Data: build("b", 10, 8080)}}
	c := NewCache()
	step := func(what string, wantDecoded int) {
		t.Helper()
		before := c.decoded
		checkFiles(t, what, c, files)
		if got := c.decoded - before; got != wantDecoded {
			t.Errorf("%s: decoded %d documents, want %d", what, got, wantDecoded)
		}
		// Only what the last load saw: at most its 20 documents, and the
		// files it had to decode whole.
		if len(c.docs) > 20 || len(c.files) > 1 {
			t.Errorf("%s: the cache holds %d documents and %d whole files, more than the last load saw", what, len(c.docs), len(c.files))
		}
	}
	step("first load", 20)
	step("same files", 0)

	// One endpoint of one document changes (same length: no line moves).
	files[1].Data = bytes.Replace(files[1].Data, []byte("name: b-4\nspec:\n  ports: [{port: 80}]\n  endpoints:\n  - address: 10.0.0.1:8080"),
		[]byte("name: b-4\nspec:\n  ports: [{port: 80}]\n  endpoints:\n  - address: 10.0.0.2:8080"), 1)
	step("one endpoint changed", 1)
	step("same files", 0)

	// A line added in the middle of a.yaml, at the end of its 6th
	// document, changes that document and moves the 4 after it.
	starts := documentStarts(files[0].Data)
	files[0].Data = insertAt(files[0].Data, starts[6], "# moved\n")
	step("a line added before document 7 of 10", 5)

	// A syntax error in the last document makes the file decode whole, as
	// Load does (9 documents, then the error); the other file is reused,
	// and so is the broken file while it does not change.
	good := files[0].Data
	files[0].Data = append(bytes.Clone(good), "x: [\n"...)
	step("syntax error", 9)
	if len(c.files) != 1 {
		t.Errorf("the broken file is not held whole")
	}
	before := c.decoded
	checkFiles(t, "syntax error, again", c, files)
	if c.decoded != before {
		t.Errorf("the same broken file decoded again")
	}
	// Fixed: the documents before the error were kept from the last load;
	// the last one is decoded again.
	files[0].Data = good
	step("fixed", 1)
}

// TestCacheDoesNotShareMutableState checks that a load's Set and errors are
// its own where they must be: slices and errors; resources are shared, and
// neither validation nor a later load changes them.
func TestCacheDoesNotShareMutableState(t *testing.T) {
	t.Parallel()
	data := []byte("apiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n---\n" +
		"apiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: b, labels: {Bad Key: x}}\nspec: {ports: [{port: 80}]}\n")
	c := NewCache()
	_, err1 := c.LoadFiles(File{Name: "x.yaml", Data: data})
	_, err2 := c.LoadFiles(File{Name: "x.yaml", Data: data})
	var l1, l2 ErrorList
	if !errors.As(err1, &l1) || !errors.As(err2, &l2) || len(l1) != 1 || len(l2) != 1 {
		t.Fatalf("errors %v, %v; want one each", err1, err2)
	}
	if l1[0] == l2[0] {
		t.Errorf("two loads returned the same *Error")
	}
	good := data[:bytes.Index(data, []byte("---"))]
	s1, err := c.LoadFiles(File{Name: "x.yaml", Data: good})
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c.LoadFiles(File{Name: "x.yaml", Data: good})
	if err != nil {
		t.Fatal(err)
	}
	if s1.Services[0] != s2.Services[0] {
		t.Errorf("the Service was decoded again")
	}
	if got := s1.Services[0].Spec.Ports[0].Protocol; got != ProtocolHTTP {
		t.Errorf("protocol %q, want the default %q", got, ProtocolHTTP)
	}
	s1.Services = append(s1.Services[:0], nil)
	if s2.Services[0] == nil {
		t.Errorf("two loads share the Services slice")
	}
}

// TestNilCache checks that a nil *Cache loads without caching.
func TestNilCache(t *testing.T) {
	t.Parallel()
	var c *Cache
	wantSet, wantErr := Load("testdata/good")
	gotSet, gotErr := c.Load("testdata/good")
	sameResult(t, "Load", gotSet, gotErr, wantSet, wantErr)
	files, _ := readPaths([]string{"testdata/bad/names.yaml"})
	wantSet, wantErr = LoadFiles(files...)
	gotSet, gotErr = c.LoadFiles(files...)
	sameResult(t, "LoadFiles", gotSet, gotErr, wantSet, wantErr)
}

// TestGatewayWithoutListeners is a route attached to a gateway that has no
// listeners: validation used to dereference a nil port.
func TestGatewayWithoutListeners(t *testing.T) {
	t.Parallel()
	data := "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec:\n  gatewayClassName: meshgate\n  listeners: []\n---\n" +
		"apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: r}\nspec:\n  parentRefs: [{name: gw}]\n"
	_, err := LoadFiles(File{Name: "x.yaml", Data: []byte(data)})
	want := "x.yaml:6: spec.listeners: at least one listener is required\n" +
		`x.yaml:12: spec.parentRefs[0]: gateway "gw" has no listeners`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
}

// reloadFiles builds a policy of n Services (two endpoints each) and n
// SecurityPolicies, one per Service, in two files; endpoint selects the
// address of one endpoint of service n/2.
func reloadFiles(n int, endpoint string) []File {
	var services, policies bytes.Buffer
	for i := range n {
		addr := fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1)
		if i == n/2 {
			addr = endpoint
		}
		fmt.Fprintf(&services, `---
apiVersion: meshgate.dev/v1alpha1
kind: Service
metadata:
  name: svc-%d
  namespace: shop
  labels:
    app: svc-%d
spec:
  ports:
  - name: http
    port: 8080
    protocol: HTTP
  endpoints:
  - address: %s
    labels:
      version: v1
  - address: 10.1.%d.%d:8080
    sidecar: true
`, i, i, addr, i/250, i%250+1)
		fmt.Fprintf(&policies, `---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata:
  name: svc-%d
  namespace: shop
spec:
  targetRefs:
  - kind: Service
    name: svc-%d
  mtls:
    mode: STRICT
  rules:
  - name: callers
    action: ALLOW
    from:
    - services: ["svc-%d", "shop/svc-%d"]
      namespaces: [shop]
    to:
    - methods: [GET, POST]
      paths: ["/api/*"]
  - name: no-admin
    action: DENY
    to:
    - paths: ["/admin/**"]
`, i, i, (i+1)%n, (i+2)%n)
	}
	return []File{
		{Name: "policy/services.yaml", Data: services.Bytes()},
		{Name: "policy/security.yaml", Data: policies.Bytes()},
	}
}

// discoveryFiles is reloadFiles as the control plane sees it with service
// discovery: each Service is a file of one JSON document (see serviceFiles
// in controlplane), then the SecurityPolicies.
func discoveryFiles(n int, endpoint string) []File {
	var files []File
	for i := range n {
		addr := fmt.Sprintf("10.0.%d.%d:8080", i/250, i%250+1)
		if i == n/2 {
			addr = endpoint
		}
		files = append(files, File{
			Name: fmt.Sprintf("consul:catalog/shop/svc-%d", i),
			Data: fmt.Appendf(nil, `{"apiVersion":"meshgate.dev/v1alpha1","kind":"Service","metadata":{"name":"svc-%d","namespace":"shop"},`+
				`"spec":{"ports":[{"name":"http","port":8080,"protocol":"HTTP"}],"endpoints":[{"address":%q,"labels":{"version":"v1"}},{"address":"10.1.%d.%d:8080","sidecar":true}]}}`,
				i, addr, i/250, i%250+1),
		})
	}
	return append(files, reloadFiles(n, endpoint)[1])
}

// BenchmarkReload1000 measures a reload of 1000 Services and 1000
// SecurityPolicies after one endpoint of one Service changed, with LoadFiles
// (everything decoded again) and through a Cache (one document decoded), in
// two files ("files") or with one file per Service ("discovery").
func BenchmarkReload1000(b *testing.B) {
	const n = 1000
	layouts := []struct {
		name  string
		build func(n int, endpoint string) []File
	}{
		{"files", reloadFiles},
		{"discovery", discoveryFiles},
	}
	for _, layout := range layouts {
		versions := [2][]File{layout.build(n, "10.9.9.1:8080"), layout.build(n, "10.9.9.2:8080")}
		for _, v := range versions {
			if _, err := LoadFiles(v...); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(layout.name+"/LoadFiles", func(b *testing.B) {
			i := 0
			for b.Loop() {
				i++
				if _, err := LoadFiles(versions[i%2]...); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(layout.name+"/Cache", func(b *testing.B) {
			c := NewCache()
			if _, err := c.LoadFiles(versions[0]...); err != nil {
				b.Fatal(err)
			}
			before, i := c.decoded, 0
			for b.Loop() {
				i++
				if _, err := c.LoadFiles(versions[i%2]...); err != nil {
					b.Fatal(err)
				}
			}
			if per := float64(c.decoded-before) / float64(i); per != 1 {
				b.Fatalf("decoded %.1f documents per reload, want 1", per)
			}
		})
		// Evaluate through a Cache: a Load that also writes every
		// resource's status (the control plane's reload).
		b.Run(layout.name+"/CacheEvaluate", func(b *testing.B) {
			c := NewCache()
			c.Evaluate(Input{Files: versions[0]})
			i := 0
			for b.Loop() {
				i++
				if r := c.Evaluate(Input{Files: versions[i%2]}); len(r.Errors) > 0 {
					b.Fatal(r.Errors)
				}
			}
		})
		// The first load through a Cache decodes everything, document by
		// document.
		b.Run(layout.name+"/CacheFirstLoad", func(b *testing.B) {
			for b.Loop() {
				if _, err := NewCache().LoadFiles(versions[0]...); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
