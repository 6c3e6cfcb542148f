package policy

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	gwapiv1 "sigs.k8s.io/gateway-api/apis/v1"
)

func TestLoadGoodDirectory(t *testing.T) {
	t.Parallel()
	set, err := Load("testdata/good")
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	wantFiles := []string{"testdata/good/gateway.yaml", "testdata/good/routes.yaml", "testdata/good/services.yml"}
	if !slices.Equal(set.Files, wantFiles) {
		t.Errorf("Files = %v, want %v", set.Files, wantFiles)
	}
	var names []string
	for _, g := range set.Gateways {
		names = append(names, "Gateway "+g.Namespace+"/"+g.Name)
	}
	for _, r := range set.HTTPRoutes {
		names = append(names, "HTTPRoute "+r.Namespace+"/"+r.Name)
	}
	for _, s := range set.Services {
		names = append(names, "Service "+s.Namespace+"/"+s.Name)
	}
	wantNames := []string{
		"Gateway default/edge",
		"HTTPRoute default/orders", "HTTPRoute default/orders-mesh",
		"Service default/orders", "Service default/orders-v2",
	}
	if !slices.Equal(names, wantNames) {
		t.Errorf("resources = %v, want %v", names, wantNames)
	}

	edge := set.LookupGateway("default", "edge")
	if edge == nil || edge.Kind != KindGateway || edge.APIVersion != GatewayAPIVersion {
		t.Fatalf("gateway edge = %+v", edge)
	}
	if got := edge.BindAddress(); got != "127.0.0.1" {
		t.Errorf("BindAddress = %q", got)
	}
	if len(edge.Spec.Listeners) != 2 || *edge.Spec.Listeners[1].Hostname != "*.example.com" {
		t.Errorf("listeners = %+v", edge.Spec.Listeners)
	}

	route := set.HTTPRoutes[0]
	rule := route.Spec.Rules[0]
	if got := *rule.BackendRefs[0].Weight; got != 90 {
		t.Errorf("weight = %d, want 90", got)
	}
	if got := *rule.Timeouts.Request; got != "10s" {
		t.Errorf("timeouts.request = %q", got)
	}
	if got := *rule.Filters[0].URLRewrite.Path.ReplacePrefixMatch; got != "/" {
		t.Errorf("replacePrefixMatch = %q", got)
	}
	lines := map[string]int{
		"":                                  2,
		"metadata.name":                     5,
		"spec.parentRefs[0].sectionName":    9,
		"spec.rules[0].backendRefs[1].name": 29,
		"spec.rules[0].backendRefs[1].port": 29, // absent: the closest ancestor
		"spec.rules[1].filters[0].requestRedirect.statusCode": 41,
	}
	for path, want := range lines {
		if got := route.Source.LineOf(path); got != want {
			t.Errorf("LineOf(%q) = %d, want %d", path, got, want)
		}
	}
	if route.Source.File != "testdata/good/routes.yaml" {
		t.Errorf("Source.File = %q", route.Source.File)
	}

	orders := set.LookupService("default", "orders")
	wantSpec := ServiceSpec{
		Ports: []ServicePort{{Name: "http", Port: 8080, Protocol: ProtocolHTTP}, {Name: "grpc", Port: 9090, Protocol: ProtocolHTTP2}},
		Endpoints: []Endpoint{
			{Address: "127.0.0.1:18080", Port: "http", Labels: map[string]string{"version": "v1"}},
			{Address: "127.0.0.1:19090", Port: "9090"},
		},
	}
	if orders == nil || !reflect.DeepEqual(orders.Spec, wantSpec) {
		t.Errorf("orders spec = %+v, want %+v", orders, wantSpec)
	}
	if p := orders.LookupPort("9090"); p == nil || p.Name != "grpc" {
		t.Errorf("LookupPort(9090) = %+v", p)
	}
	if set.LookupService("default", "nope") != nil || set.LookupGateway("other", "edge") != nil {
		t.Error("lookup of a missing resource returned one")
	}
}

func TestLoadFilesAndEdgeCases(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		data    string
		wantErr []string // empty: success
	}{
		{name: "empty file", data: ""},
		{name: "only comments and separators", data: "# nothing\n---\n---\n"},
		{
			name:    "self-referencing alias",
			data:    "apiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata:\n  name: x\n  annotations: &a {x: *a}\nspec: {ports: [{port: 1}]}\n",
			wantErr: []string{"mem.yaml:5: metadata.annotations.x: expected a string, got a mapping"},
		},
		{
			name:    "merge keys",
			data:    "base: &b {port: 80}\napiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports:\n  - <<: *b\n",
			wantErr: []string{`mem.yaml:1: base: unknown field "base"`, "mem.yaml:7: spec.ports[0]: YAML merge keys (<<) are not supported"},
		},
		{
			name:    "duplicate keys",
			data:    "apiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: x}\nspec:\n  ports: [{port: 80}]\n  ports: [{port: 81}]\n",
			wantErr: []string{"mem.yaml:6: spec.ports: duplicate field (first at line 5)"},
		},
		{
			name: "yaml anchors are fine",
			data: "apiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: x, labels: &l {app: x}}\nspec:\n  ports: [{port: 80}]\n  endpoints: [{address: \"10.0.0.1:1\", labels: *l}]\n",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			set, err := LoadFiles(File{Name: "mem.yaml", Data: []byte(tc.data)})
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("LoadFiles: %v", err)
				}
				if set == nil {
					t.Fatal("nil set")
				}
				return
			}
			var list ErrorList
			if !errors.As(err, &list) {
				t.Fatalf("err = %v, want an ErrorList", err)
			}
			var got []string
			for _, e := range list {
				got = append(got, e.Error())
			}
			if !slices.Equal(got, tc.wantErr) {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tc.wantErr, "\n"))
			}
		})
	}
}

func TestLoadMissingPath(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	_, err := Load(missing)
	var list ErrorList
	if !errors.As(err, &list) || len(list) != 1 || list[0].File != missing || !strings.Contains(list[0].Message, "no such file") {
		t.Fatalf("err = %v", err)
	}
}

func TestParseDuration(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in      gwapiv1.Duration
		want    time.Duration
		wantErr bool
	}{
		{in: "10s", want: 10 * time.Second},
		{in: "1h30m", want: 90 * time.Minute},
		{in: "500ms", want: 500 * time.Millisecond},
		{in: "0s", want: 0},
		{in: "1h1m1s1ms", want: time.Hour + time.Minute + time.Second + time.Millisecond},
		{in: "1.5s", wantErr: true},
		{in: "100us", wantErr: true},
		{in: "-1s", wantErr: true},
		{in: "123456s", wantErr: true},
		{in: "1h1m1s1ms1h", wantErr: true},
		{in: "", wantErr: true},
	}
	for _, tc := range tests {
		got, err := ParseDuration(tc.in)
		if (err != nil) != tc.wantErr || got != tc.want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v, error %v", tc.in, got, err, tc.want, tc.wantErr)
		}
	}
}

func TestHostnamesIntersect(t *testing.T) {
	t.Parallel()
	tests := []struct {
		listener, route string
		want            bool
	}{
		{"example.com", "example.com", true},
		{"example.com", "foo.example.com", false},
		{"*.example.com", "foo.example.com", true},
		{"*.example.com", "a.b.example.com", true},
		{"*.example.com", "example.com", false},
		{"foo.example.com", "*.example.com", true},
		{"*.example.com", "*.foo.example.com", true},
		{"*.foo.example.com", "*.example.com", true},
		{"*.example.com", "*.example.org", false},
		{"shop.example.com", "*.shop.example.com", false},
	}
	for _, tc := range tests {
		if got := hostnamesIntersect(tc.listener, tc.route); got != tc.want {
			t.Errorf("hostnamesIntersect(%q, %q) = %v, want %v", tc.listener, tc.route, got, tc.want)
		}
	}
}

// TestNodeDecoderCustomTypes checks types with their own JSON decoding
// (metav1.Time, metav1.Duration) and interface fields, which policy kinds
// may contain, are decoded by the type itself and reported with their line.
func TestNodeDecoderCustomTypes(t *testing.T) {
	t.Parallel()
	type sample struct {
		When    metav1.Time     `json:"when"`
		Timeout metav1.Duration `json:"timeout"`
		Extra   any             `json:"extra"`
		Ptr     *int32          `json:"ptr"`
	}
	tests := []struct {
		name string
		yaml string
		typ  reflect.Type // default: sample
		want []string
	}{
		{name: "valid", yaml: "when: 2024-01-02T03:04:05Z\ntimeout: 1m\nextra: {a: [1, true, x]}\nptr: 3\n"},
		{name: "null pointer", yaml: "ptr: ~\n"},
		{name: "bad time", yaml: "when: yesterday\n", want: []string{`1 when: invalid value string "yesterday"`}},
		{name: "bad duration", yaml: "\ntimeout: 5 minutes\n", want: []string{`2 timeout: invalid value string "5 minutes"`}},
		{name: "nan", yaml: "extra: .nan\n", want: []string{`1 extra: expected a finite number, got number .nan`}},
		{
			name: "alias bomb",
			yaml: "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n" +
				"c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n" +
				"e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n",
			typ:  reflect.TypeFor[map[string]any](),
			want: []string{"1 e[7][8][8][8][4]: document too large (more than 100000 nodes, counting alias expansions)"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var doc yaml.Node
			if err := yaml.Unmarshal([]byte(tc.yaml), &doc); err != nil {
				t.Fatal(err)
			}
			var got []string
			nd := newNodeDecoder(func(line int, field, message string) {
				msg, _, _ := strings.Cut(message, ":")
				got = append(got, strings.Join([]string{strconv.Itoa(line), field + ":", msg}, " "))
			})
			typ := tc.typ
			if typ == nil {
				typ = reflect.TypeFor[sample]()
			}
			nd.decode(doc.Content[0], typ, "", 0)
			for i := range got {
				got[i] = strings.TrimSpace(got[i])
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors = %q, want %q", got, tc.want)
			}
		})
	}
}

// FuzzLoad feeds arbitrary bytes to Load: it must never panic, and must
// return either a set or an ErrorList; a Cache must return the same.
func FuzzLoad(f *testing.F) {
	for _, dir := range []string{"testdata/good", "testdata/bad", "testdata/multi"} {
		_ = filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				if data, err := os.ReadFile(path); err == nil {
					f.Add(data)
				}
			}
			return nil
		})
	}
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("x: &x {port: 80}\n---\n--- # c\napiVersion: meshgate.dev/v1alpha1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [*x]}\n"))
	f.Add([]byte("--- # c\nkind: Service\n---\nb: [\n---\nc: 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "fuzz.yaml")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		set, err := Load(path)
		if err == nil {
			if set == nil {
				t.Fatal("nil set and nil error")
			}
		} else {
			var list ErrorList
			if !errors.As(err, &list) || len(list) == 0 {
				t.Fatalf("error is %T (%v), want a non-empty ErrorList", err, err)
			}
		}
		// A Cache returns what Load returns: on a first load, on a second
		// (everything reused), and after changes that keep some documents
		// and not others.
		c := NewCache()
		whole := File{Name: path, Data: data}
		for _, what := range []string{"first load", "second load"} {
			cset, cerr := c.LoadFiles(whole)
			sameResult(t, what, cset, cerr, set, err)
		}
		checkFiles(t, "first half", c, []File{{Name: path, Data: data[:len(data)/2]}})
		cset, cerr := c.LoadFiles(whole)
		sameResult(t, "whole again", cset, cerr, set, err)
	})
}
