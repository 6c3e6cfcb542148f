package translate

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

var update = flag.Bool("update", false, "rewrite testdata/<feature>/*.out.yaml from the translation of their .in.yaml")

// features are the translator's features, one file each (see the package
// documentation), each with golden pairs under testdata/<feature>/.
var features = []string{"gateway", "sidecar", "listener", "route", "header", "traffic", "cluster", "endpoint", "rbac", "tls", "gatewaytls", "tracing", "accesslog", "trafficpolicy", "grpcweb", "cors", "ratelimit", "jwt", "consumers", "authn", "l4", "openapi", "responsecache", "extauthz", "proxyless", "envoy", "capture"}

// TestFeatureFiles: every feature is a file of the package with golden
// pairs, and every file of the package builds a feature or ties them
// together.
func TestFeatureFiles(t *testing.T) {
	t.Parallel()
	glue := []string{"translate.go", "cache.go", "node.go", "json.go"}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		if !slices.Contains(glue, f) && !slices.Contains(features, strings.TrimSuffix(f, ".go")) {
			t.Errorf("%s is neither a feature (with golden pairs in testdata/%s/) nor listed as glue", f, strings.TrimSuffix(f, ".go"))
		}
	}
	for _, feature := range features {
		if !slices.Contains(files, feature+".go") {
			t.Errorf("feature %s has no file %s.go", feature, feature)
		}
	}
}

// goldenCA is the trust bundle of the cases with trustBundle: a real
// certificate, which the data plane parses (contract_test.go).
const goldenCA = "testdata/ca.pem"

// goldenInput is a <case>.in.yaml: a policy, and what a translation needs
// besides.
type goldenInput struct {
	// TrustBundle: the mesh has a CA (testdata/ca.pem), as a control plane
	// always does: the ROOTCA secret, mTLS between proxies.
	TrustBundle bool `yaml:"trustBundle"`
	// Nodes to translate for; by default a gateway node per Gateway and a
	// sidecar per Service (goldenNodes).
	Nodes []yamlNodeInfo `yaml:"nodes"`
	// Policy is the policy, as in a policy file.
	Policy string `yaml:"policy"`
	// UnresolvedRefs, when set, are the errors the policy has, each
	// "line: field: message", all references that do not resolve: the
	// policy is then served as the control plane serves it
	// (policy.Evaluate), those references resolving to nothing. Without
	// it the policy must be valid (policy.LoadFiles).
	UnresolvedRefs []string `yaml:"unresolvedRefs"`
}

// goldenCase is one golden pair.
type goldenCase struct {
	feature, name string
	in, out       string // paths
}

// goldenCases lists every pair of testdata/<feature>/.
func goldenCases(t *testing.T) []goldenCase {
	t.Helper()
	var cases []goldenCase
	for _, feature := range features {
		ins, err := filepath.Glob(filepath.Join("testdata", feature, "*.in.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if len(ins) == 0 {
			t.Errorf("feature %s has no golden pair (testdata/%s/<case>.in.yaml)", feature, feature)
		}
		for _, in := range ins {
			name := strings.TrimSuffix(filepath.Base(in), ".in.yaml")
			cases = append(cases, goldenCase{feature: feature, name: name, in: in, out: strings.TrimSuffix(in, ".in.yaml") + ".out.yaml"})
		}
	}
	return cases
}

// load reads and compiles a case's input: the model, the inputs and the
// nodes to translate for.
func (c goldenCase) load(t testing.TB) (*model.Model, Inputs, []NodeInfo) {
	t.Helper()
	data, err := os.ReadFile(c.in)
	if err != nil {
		t.Fatal(err)
	}
	var gin goldenInput
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&gin); err != nil {
		t.Fatalf("%s: %v", c.in, err)
	}
	set, err := loadGoldenPolicy(c.in, gin)
	if err != nil {
		t.Fatalf("%s: %v", c.in, err)
	}
	m, err := model.Compile(set)
	if err != nil {
		t.Fatalf("%s: compile: %v", c.in, err)
	}
	var in Inputs
	if gin.TrustBundle {
		if in.TrustBundle, err = os.ReadFile(goldenCA); err != nil {
			t.Fatal(err)
		}
	}
	nodes := goldenNodes(m)
	if len(gin.Nodes) > 0 {
		nodes = nodes[:0]
		for _, n := range gin.Nodes {
			nodes = append(nodes, NodeInfo(n))
		}
	}
	return m, in, nodes
}

// loadGoldenPolicy reads the policy of the golden input in: valid, or with
// exactly the unresolved references it lists.
func loadGoldenPolicy(in string, gin goldenInput) (*policy.Set, error) {
	file := policy.File{Name: in + "#policy", Data: []byte(gin.Policy)}
	if len(gin.UnresolvedRefs) == 0 {
		return policy.LoadFiles(file)
	}
	res := policy.Evaluate(policy.Input{Files: []policy.File{file}})
	var got []string
	for _, e := range res.Errors {
		got = append(got, fmt.Sprintf("%d: %s: %s", e.Line, e.Field, e.Message))
	}
	if !slices.Equal(got, gin.UnresolvedRefs) {
		return nil, fmt.Errorf("policy errors:\n%s\nwant unresolvedRefs:\n%s", strings.Join(got, "\n"), strings.Join(gin.UnresolvedRefs, "\n"))
	}
	for _, st := range res.Statuses {
		if st.State != policy.StateAccepted {
			return nil, fmt.Errorf("%s %s/%s not accepted: an unresolved reference must leave it accepted", st.Kind, st.Namespace, st.Name)
		}
	}
	return res.Set, nil
}

// yamlNodeInfo is NodeInfo in a golden file.
type yamlNodeInfo struct {
	ID              string `yaml:"id"`
	Role            string `yaml:"role"`
	Namespace       string `yaml:"namespace"`
	Gateway         string `yaml:"gateway,omitempty"`
	Service         string `yaml:"service,omitempty"`
	InboundAddress  string `yaml:"inboundAddress,omitempty"`
	AppAddress      string `yaml:"appAddress,omitempty"`
	OutboundAddress string `yaml:"outboundAddress,omitempty"`
	OutboundTCP     string `yaml:"outboundTCP,omitempty"`
	CaptureAddress  string `yaml:"captureAddress,omitempty"`
	CaptureUnknown  string `yaml:"captureUnknown,omitempty"`
	Listeners       string `yaml:"listeners,omitempty"`
	Zone            string `yaml:"zone,omitempty"`
	Envoy           bool   `yaml:"envoy,omitempty"`
}

// goldenNodes are a gateway node per Gateway and a sidecar per Service,
// with fixed addresses.
func goldenNodes(m *model.Model) []NodeInfo {
	var nodes []NodeInfo
	for _, gw := range m.Gateways {
		nodes = append(nodes, NodeInfo{ID: "gateway~" + gw.Namespace + "~" + gw.Name, Role: RoleGateway, Namespace: gw.Namespace, Gateway: gw.Name})
	}
	for i, svc := range m.Services {
		nodes = append(nodes, NodeInfo{
			ID: "sidecar~" + svc.Namespace + "~" + svc.Name, Role: RoleSidecar, Namespace: svc.Namespace, Service: svc.Name,
			InboundAddress:  fmt.Sprintf("127.0.0.1:%d", 31000+i),
			AppAddress:      fmt.Sprintf("127.0.0.1:%d", 32000+i),
			OutboundAddress: fmt.Sprintf("127.0.0.1:%d", 33000+i),
		})
	}
	return nodes
}

// goldenNode is what one node receives, as a .out.yaml holds it.
type goldenNode struct {
	Node NodeInfo
	Res  *Resources
}

// TestGolden translates every golden input, for every node, through the
// production entry point (Cache, shared by the nodes, translating them
// concurrently) and requires its .out.yaml; Translate, the pure function,
// must give the same. go test -update rewrites the outputs.
func TestGolden(t *testing.T) {
	t.Parallel()
	for _, c := range goldenCases(t) {
		t.Run(c.feature+"/"+c.name, func(t *testing.T) {
			t.Parallel()
			m, in, nodes := c.load(t)
			cache := NewCache(m, in)
			got := make([]goldenNode, len(nodes))
			errs := make([]error, len(nodes))
			done := make(chan int)
			for i, node := range nodes {
				go func() {
					got[i] = goldenNode{Node: node}
					got[i].Res, errs[i] = cache.Translate(node)
					done <- i
				}()
			}
			for range nodes {
				<-done
			}
			for i, node := range nodes {
				if errs[i] != nil {
					t.Fatalf("Cache.Translate(%s): %v", node.ID, errs[i])
				}
				validateAll(t, got[i].Res)
				pure, err := Translate(m, in, node)
				if err != nil {
					t.Fatalf("Translate(%s): %v", node.ID, err)
				}
				if !sameResources(pure, got[i].Res) {
					t.Errorf("node %s: Translate and Cache.Translate differ", node.ID)
				}
			}
			out, err := marshalGolden(got)
			if err != nil {
				t.Fatal(err)
			}
			if *update {
				if err := os.WriteFile(c.out, out, 0o644); err != nil {
					t.Fatal(err)
				}
			} else {
				want, err := os.ReadFile(c.out)
				if err != nil {
					t.Fatalf("%v (go test -update writes it)", err)
				}
				if !bytes.Equal(out, want) {
					t.Errorf("%s differs from the translation of %s; run go test -update and review the diff", c.out, c.in)
				}
			}
			// What the file holds decodes to what was translated: the
			// contract test feeds the files to the data plane.
			back, err := unmarshalGolden(out)
			if err != nil {
				t.Fatal(err)
			}
			for i := range got {
				if back[i].Node != got[i].Node || !sameResources(back[i].Res, got[i].Res) {
					t.Errorf("node %s does not survive its YAML", got[i].Node.ID)
				}
			}
		})
	}
}

// sameResources reports whether a and b hold equal messages in the same
// order.
func sameResources(a, b *Resources) bool {
	return slices.EqualFunc(a.Messages(), b.Messages(), proto.Equal)
}

// goldenHeader heads every .out.yaml.
const goldenHeader = "# What each node receives: the translation of the .in.yaml beside this file.\n" +
	"# Written by `go test ./controlplane/translate -update`; review the diff.\n"

// yamlNode is one golden node as YAML: each resource in its protojson form.
type yamlNode struct {
	Node      yamlNodeInfo `yaml:"node"`
	Listeners []yaml.Node  `yaml:"listeners,omitempty"`
	Routes    []yaml.Node  `yaml:"routes,omitempty"`
	Clusters  []yaml.Node  `yaml:"clusters,omitempty"`
	Endpoints []yaml.Node  `yaml:"endpoints,omitempty"`
	Secrets   []yaml.Node  `yaml:"secrets,omitempty"`
}

// marshalGolden renders nodes as a .out.yaml: every resource as protojson
// (field names as in Envoy's JSON, Any with @type), in block style.
func marshalGolden(nodes []goldenNode) ([]byte, error) {
	out := make([]yamlNode, 0, len(nodes))
	for _, n := range nodes {
		yn := yamlNode{Node: yamlNodeInfo(n.Node)}
		for _, part := range []struct {
			msgs []proto.Message
			to   *[]yaml.Node
		}{
			{asMessages(n.Res.Listeners), &yn.Listeners}, {asMessages(n.Res.Routes), &yn.Routes},
			{asMessages(n.Res.Clusters), &yn.Clusters}, {asMessages(n.Res.Endpoints), &yn.Endpoints},
			{asMessages(n.Res.Secrets), &yn.Secrets},
		} {
			for _, m := range part.msgs {
				node, err := messageNode(m)
				if err != nil {
					return nil, err
				}
				*part.to = append(*part.to, node)
			}
		}
		out = append(out, yn)
	}
	var b bytes.Buffer
	b.WriteString(goldenHeader)
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(out); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func asMessages[M proto.Message](msgs []M) []proto.Message {
	out := make([]proto.Message, len(msgs))
	for i, m := range msgs {
		out[i] = m
	}
	return out
}

// messageNode is m's protojson as a YAML node in block style.
func messageNode(m proto.Message) (yaml.Node, error) {
	b, err := protojson.Marshal(m)
	if err != nil {
		return yaml.Node{}, fmt.Errorf("marshal %T: %w", m, err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return yaml.Node{}, err
	}
	var blockStyle func(n *yaml.Node)
	blockStyle = func(n *yaml.Node) {
		n.Style = 0
		if n.Kind == yaml.ScalarNode && n.Tag == "!!str" && yaml11Bool(n.Value) {
			// "yes" is a string to YAML 1.2 and a boolean to YAML 1.1:
			// quoted, it is a string to both.
			n.Style = yaml.DoubleQuotedStyle
		}
		for _, c := range n.Content {
			blockStyle(c)
		}
	}
	blockStyle(&doc)
	return *doc.Content[0], nil
}

// yaml11Bool reports whether a plain scalar is a boolean in YAML 1.1.
func yaml11Bool(s string) bool {
	switch strings.ToLower(s) {
	case "y", "yes", "n", "no", "on", "off", "true", "false":
		return true
	}
	return false
}

// unmarshalGolden reads a .out.yaml back into messages.
func unmarshalGolden(data []byte) ([]goldenNode, error) {
	var in []yamlNode
	if err := yaml.Unmarshal(data, &in); err != nil {
		return nil, err
	}
	out := make([]goldenNode, 0, len(in))
	for _, yn := range in {
		res := &Resources{}
		var errs []error
		res.Listeners = decodeAll[*listenerv3.Listener](yn.Listeners, &errs)
		res.Routes = decodeAll[*routev3.RouteConfiguration](yn.Routes, &errs)
		res.Clusters = decodeAll[*clusterv3.Cluster](yn.Clusters, &errs)
		res.Endpoints = decodeAll[*endpointv3.ClusterLoadAssignment](yn.Endpoints, &errs)
		res.Secrets = decodeAll[*tlsv3.Secret](yn.Secrets, &errs)
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("node %s: %w", yn.Node.ID, err)
		}
		out = append(out, goldenNode{Node: NodeInfo(yn.Node), Res: res})
	}
	return out, nil
}

// decodeAll decodes YAML nodes holding protojson into messages of type M.
func decodeAll[M proto.Message](nodes []yaml.Node, errs *[]error) []M {
	var out []M
	for i := range nodes {
		var v any
		if err := nodes[i].Decode(&v); err != nil {
			*errs = append(*errs, err)
			continue
		}
		b, err := json.Marshal(v)
		if err != nil {
			*errs = append(*errs, err)
			continue
		}
		var m M
		m = m.ProtoReflect().New().Interface().(M)
		if err := protojson.Unmarshal(b, m); err != nil {
			*errs = append(*errs, fmt.Errorf("%T: %w", m, err))
			continue
		}
		out = append(out, m)
	}
	return out
}
