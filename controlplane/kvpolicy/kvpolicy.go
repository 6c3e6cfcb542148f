// Package kvpolicy keeps policy resources in Consul KV, one key per
// resource, <prefix>policy/<Kind>/<namespace>/<name>, holding that
// resource's YAML document. Apply validates the whole resulting set (what KV
// holds plus the new documents, with the services the control plane
// discovers when WithServices gives them) with the policy loader before
// writing, and writes in one KV transaction guarded by the ModifyIndex of
// every key read, so that two operators applying at once cannot interleave:
// the second gets ErrConflict. Source feeds the control plane: every resource as a
// policy.File named "consul:<key>", and a blocking-query watch on the
// prefix.
package kvpolicy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/hashicorp/consul/api"
	"go.yaml.in/yaml/v3"

	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/policy"
)

// DefaultPrefix is the KV prefix meshgate uses unless told otherwise.
const DefaultPrefix = "meshgate/"

// FilePrefix starts the name of every policy.File from KV, so that
// validation errors name the key: "consul:meshgate/policy/HTTPRoute/default/web".
const FilePrefix = "consul:"

// maxTxnOps is Consul's limit on the operations of one transaction.
const maxTxnOps = 128

// Errors, wrapped.
var (
	// ErrConflict: someone changed the policy in KV between the read and
	// the write of an Apply or Delete.
	ErrConflict = errors.New("policy changed since it was read, retry")
	// ErrNotFound: no such resource in KV.
	ErrNotFound = errors.New("no such policy resource")
	// ErrUnknownKind: a kind meshgate does not keep.
	ErrUnknownKind = errors.New("unknown kind")
)

// CanonicalKind maps a kind as typed (any case, plural, short name: "svc",
// "httproutes") to its name in policy files.
func CanonicalKind(s string) (string, error) {
	if k, ok := policy.LookupKind(s); ok {
		return k, nil
	}
	return "", fmt.Errorf("%w %q (want %s)", ErrUnknownKind, s, policy.KindsText())
}

// Store reads and writes policy resources under a KV prefix.
type Store struct {
	txn    *api.Txn
	kv     *api.KV
	prefix string
	// beforeWrite, when set (tests), runs between the read and the write of
	// Apply and Delete.
	beforeWrite func()
	// services, when set, gives the discovered services Apply and Delete
	// validate the policy with (WithServices).
	services ServiceSource
}

// ServiceSource returns the services a control plane discovers (the Consul
// catalog) as the Services the control plane validates them as
// (policy.Input.Services: each named after its source, e.g.
// "consul:catalog/orders").
type ServiceSource func(ctx context.Context) ([]*policy.Service, error)

// WithServices makes Apply and Delete validate the policy together with the
// services src returns, read once per call, placed before the policy as the
// control plane places its discovered services: a route may send traffic to
// a service only the catalog knows, and a Service resource named like a
// discovered one is reported as its duplicate. It returns s.
func (s *Store) WithServices(src ServiceSource) *Store {
	s.services = src
	return s
}

// discovered calls the ServiceSource, if any.
func (s *Store) discovered(ctx context.Context) ([]*policy.Service, error) {
	if s.services == nil {
		return nil, nil
	}
	return s.services(ctx)
}

// New returns the store under prefix ("" means DefaultPrefix; a trailing
// "/" is added when missing).
func New(client *api.Client, prefix string) *Store {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	return &Store{txn: client.Txn(), kv: client.KV(), prefix: prefix}
}

// PolicyPrefix is where the resources live: <prefix>policy/.
func (s *Store) PolicyPrefix() string { return s.prefix + "policy/" }

// revisionKey is bumped by every Apply and Delete: checking it in the
// transaction makes two writers that read the same policy conflict even
// when they write different keys (a route, and the service it needs).
func (s *Store) revisionKey() string { return s.prefix + "policy-revision" }

// Key is the KV key of a resource.
func (s *Store) Key(kind, namespace, name string) string {
	return s.PolicyPrefix() + kind + "/" + namespace + "/" + name
}

// Resource is one policy resource in KV.
type Resource struct {
	Kind, Namespace, Name string
	// Key is its KV key.
	Key string
	// Data is its YAML document.
	Data []byte
	// ModifyIndex is Consul's index of its last write.
	ModifyIndex uint64
}

// File is the resource as the policy loader reads it.
func (r Resource) File() policy.File { return policy.File{Name: FilePrefix + r.Key, Data: r.Data} }

// Action is what Apply did to a resource.
type Action string

// Actions, as kubectl names them.
const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
)

// Result is the outcome of Apply for one resource.
type Result struct {
	Kind, Namespace, Name string
	Action                Action
}

func (r Result) String() string {
	return fmt.Sprintf("%s %s/%s %s", strings.ToLower(r.Kind), r.Namespace, r.Name, r.Action)
}

// snapshot is the policy as read, with the index of the revision key.
type snapshot struct {
	resources map[string]Resource // by key
	other     []policy.File       // keys that do not name a resource (by hand): validated too
	revision  *api.KVPair
	index     uint64 // Consul's index of the read
}

// read lists the policy: the revision key first, so that a write between
// the two reads shows as a conflict rather than going unseen.
func (s *Store) read(ctx context.Context) (*snapshot, error) {
	q := (&api.QueryOptions{RequireConsistent: true}).WithContext(ctx)
	rev, _, err := s.kv.Get(s.revisionKey(), q)
	if err != nil {
		return nil, consulError(err)
	}
	pairs, meta, err := s.kv.List(s.PolicyPrefix(), q)
	if err != nil {
		return nil, consulError(err)
	}
	snap := &snapshot{resources: map[string]Resource{}, revision: rev, index: meta.LastIndex}
	for _, p := range pairs {
		if strings.HasSuffix(p.Key, "/") { // a folder made in the UI
			continue
		}
		kind, ns, name, ok := s.parseKey(p.Key)
		if !ok {
			snap.other = append(snap.other, policy.File{Name: FilePrefix + p.Key, Data: p.Value})
			continue
		}
		snap.resources[p.Key] = Resource{Kind: kind, Namespace: ns, Name: name, Key: p.Key, Data: p.Value, ModifyIndex: p.ModifyIndex}
	}
	return snap, nil
}

// parseKey splits <prefix>policy/<Kind>/<ns>/<name>.
func (s *Store) parseKey(key string) (kind, namespace, name string, ok bool) {
	rest, found := strings.CutPrefix(key, s.PolicyPrefix())
	if !found {
		return "", "", "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", "", "", false
	}
	return parts[0], parts[1], parts[2], true
}

// consulError words a Consul client error for an operator.
func consulError(err error) error {
	return fmt.Errorf("consul: %w", err)
}

// files is the snapshot as loader input, in key order, leaving out keys.
func (snap *snapshot) files(except map[string]bool) []policy.File {
	keys := make([]string, 0, len(snap.resources))
	for k := range snap.resources {
		if !except[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	out := make([]policy.File, 0, len(keys)+len(snap.other))
	for _, k := range keys {
		out = append(out, snap.resources[k].File())
	}
	return append(out, snap.other...)
}

// document is one resource split out of an input file.
type document struct {
	kind, namespace, name string
	data                  []byte
}

// split cuts files into one YAML document per resource, each re-encoded on
// its own. An error means a file does not parse; the loader words it best.
func split(files []policy.File) ([]document, error) {
	var docs []document
	for _, f := range files {
		dec := yaml.NewDecoder(bytes.NewReader(f.Data))
		for {
			var node yaml.Node
			err := dec.Decode(&node)
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				return nil, fmt.Errorf("%s: %w", f.Name, err)
			}
			if len(node.Content) == 0 || node.Content[0].Kind != yaml.MappingNode {
				if len(node.Content) == 0 || node.Content[0].Tag == "!!null" {
					continue // empty document
				}
				return nil, fmt.Errorf("%s: a document is not a mapping", f.Name)
			}
			var meta struct {
				Kind     string `yaml:"kind"`
				Metadata struct {
					Name      string `yaml:"name"`
					Namespace string `yaml:"namespace"`
				} `yaml:"metadata"`
			}
			if err := node.Decode(&meta); err != nil {
				return nil, fmt.Errorf("%s: %w", f.Name, err)
			}
			var buf bytes.Buffer
			enc := yaml.NewEncoder(&buf)
			enc.SetIndent(2)
			if err := enc.Encode(&node); err != nil {
				return nil, fmt.Errorf("%s: encode document: %w", f.Name, err)
			}
			if err := enc.Close(); err != nil {
				return nil, fmt.Errorf("%s: encode document: %w", f.Name, err)
			}
			ns := meta.Metadata.Namespace
			if ns == "" {
				ns = policy.DefaultNamespace
			}
			docs = append(docs, document{kind: meta.Kind, namespace: ns, name: meta.Metadata.Name, data: buf.Bytes()})
		}
	}
	return docs, nil
}

// Apply validates files together with the policy already in KV (a resource
// of the same kind, namespace and name replaces the one in KV) and the
// discovered services (WithServices), and writes
// every new or changed resource in one transaction. On invalid policy the
// error is the loader's policy.ErrorList (naming the input files and the KV
// keys); when the policy changed in KV since it was read, ErrConflict.
func (s *Store) Apply(ctx context.Context, files []policy.File) ([]Result, error) {
	docs, splitErr := split(files)
	if splitErr != nil {
		if _, err := policy.LoadFiles(files...); err != nil {
			return nil, err
		}
		return nil, splitErr
	}
	snap, err := s.read(ctx)
	if err != nil {
		return nil, err
	}
	discovered, err := s.discovered(ctx)
	if err != nil {
		return nil, err
	}
	replaced := map[string]bool{}
	for _, d := range docs {
		replaced[s.Key(d.kind, d.namespace, d.name)] = true
	}
	if _, err := policy.LoadInput(policy.Input{Services: discovered, Files: slices.Concat(snap.files(replaced), files)}); err != nil {
		return nil, err
	}

	results := make([]Result, 0, len(docs))
	var ops api.TxnOps
	for _, d := range docs {
		key := s.Key(d.kind, d.namespace, d.name)
		if err := state.ValidateKey(key); err != nil { // validation passed: cannot happen
			return nil, fmt.Errorf("resource %s %s/%s: %w", d.kind, d.namespace, d.name, err)
		}
		r := Result{Kind: d.kind, Namespace: d.namespace, Name: d.name, Action: Created}
		var index uint64
		if old, ok := snap.resources[key]; ok {
			if bytes.Equal(old.Data, d.data) {
				r.Action = Unchanged
				results = append(results, r)
				continue
			}
			r.Action, index = Configured, old.ModifyIndex
		}
		results = append(results, r)
		ops = append(ops, &api.TxnOp{KV: &api.KVTxnOp{Verb: api.KVCAS, Key: key, Value: d.data, Index: index}})
	}
	if len(ops) == 0 {
		return results, nil
	}
	if len(ops)+1 > maxTxnOps {
		return nil, fmt.Errorf("%d resources changed in one apply: at most %d fit in one Consul transaction; apply them in parts", len(ops), maxTxnOps-1)
	}
	if err := s.commit(ctx, snap, ops); err != nil {
		return nil, err
	}
	return results, nil
}

// commit runs ops with the revision check and bump in one transaction.
func (s *Store) commit(ctx context.Context, snap *snapshot, ops api.TxnOps) error {
	if s.beforeWrite != nil {
		s.beforeWrite()
	}
	rev := &api.KVTxnOp{Verb: api.KVCAS, Key: s.revisionKey(), Value: []byte("1")}
	if snap.revision != nil {
		n, _ := strconv.ParseUint(string(snap.revision.Value), 10, 64)
		rev.Value = []byte(strconv.FormatUint(n+1, 10))
		rev.Index = snap.revision.ModifyIndex
	}
	ops = append(api.TxnOps{{KV: rev}}, ops...)
	ok, resp, _, err := s.txn.Txn(ops, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return consulError(err)
	}
	if ok {
		return nil
	}
	// Rolled back: a check-and-set failed. Name the key when it is a
	// resource's; the revision key means another write anywhere.
	var what []string
	for _, e := range resp.Errors {
		if e.OpIndex > 0 && e.OpIndex < len(ops) {
			what = append(what, ops[e.OpIndex].KV.Key)
		} else if e.OpIndex != 0 {
			what = append(what, e.What)
		}
	}
	if len(what) == 0 {
		return fmt.Errorf("%w (another apply or delete wrote the policy meanwhile)", ErrConflict)
	}
	return fmt.Errorf("%w (changed meanwhile: %s)", ErrConflict, strings.Join(what, ", "))
}

// Get returns one resource.
func (s *Store) Get(ctx context.Context, kind, namespace, name string) (Resource, error) {
	kind, err := CanonicalKind(kind)
	if err != nil {
		return Resource{}, err
	}
	if namespace == "" {
		namespace = policy.DefaultNamespace
	}
	key := s.Key(kind, namespace, name)
	p, _, err := s.kv.Get(key, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return Resource{}, consulError(err)
	}
	if p == nil {
		return Resource{}, fmt.Errorf("%w: %s %s/%s", ErrNotFound, kind, namespace, name)
	}
	return Resource{Kind: kind, Namespace: namespace, Name: name, Key: key, Data: p.Value, ModifyIndex: p.ModifyIndex}, nil
}

// List returns the resources of kind ("" for every kind), sorted by kind,
// namespace and name.
func (s *Store) List(ctx context.Context, kind string) ([]Resource, error) {
	prefix := s.PolicyPrefix()
	if kind != "" {
		k, err := CanonicalKind(kind)
		if err != nil {
			return nil, err
		}
		prefix += k + "/"
	}
	pairs, _, err := s.kv.List(prefix, (&api.QueryOptions{}).WithContext(ctx))
	if err != nil {
		return nil, consulError(err)
	}
	var out []Resource
	for _, p := range pairs {
		kind, ns, name, ok := s.parseKey(p.Key)
		if !ok {
			continue
		}
		out = append(out, Resource{Kind: kind, Namespace: ns, Name: name, Key: p.Key, Data: p.Value, ModifyIndex: p.ModifyIndex})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Delete removes one resource, after checking that the policy left is
// valid with the discovered services (nothing else refers to it); ErrConflict when the policy changed in
// KV since it was read.
func (s *Store) Delete(ctx context.Context, kind, namespace, name string) error {
	kind, err := CanonicalKind(kind)
	if err != nil {
		return err
	}
	if namespace == "" {
		namespace = policy.DefaultNamespace
	}
	snap, err := s.read(ctx)
	if err != nil {
		return err
	}
	key := s.Key(kind, namespace, name)
	old, ok := snap.resources[key]
	if !ok {
		return fmt.Errorf("%w: %s %s/%s", ErrNotFound, kind, namespace, name)
	}
	discovered, err := s.discovered(ctx)
	if err != nil {
		return err
	}
	if _, err := policy.LoadInput(policy.Input{Services: discovered, Files: snap.files(map[string]bool{key: true})}); err != nil {
		return fmt.Errorf("the policy left after deleting %s %s/%s would be invalid:\n%w", kind, namespace, name, err)
	}
	return s.commit(ctx, snap, api.TxnOps{{KV: &api.KVTxnOp{Verb: api.KVDeleteCAS, Key: key, Index: old.ModifyIndex}}})
}

// Source is the policy in KV as the control plane reads it.
type Source struct {
	store *Store
	// lastIndex is Consul's index of the last Files read: Watch starts
	// there, so that no write after it goes unseen.
	lastIndex atomic.Uint64
}

// Source returns the control plane's view of the store.
func (s *Store) Source() *Source { return &Source{store: s} }

// String names the source in the control plane's status and logs.
func (src *Source) String() string { return "consul kv" }

// Files returns every resource in KV as a policy file named "consul:<key>",
// in key order, whatever it holds: invalid content is for the loader to
// report, with the key as the file name.
func (src *Source) Files(ctx context.Context) ([]policy.File, error) {
	snap, err := src.store.read(ctx)
	if err != nil {
		return nil, err
	}
	src.lastIndex.Store(snap.index)
	return snap.files(nil), nil
}

// Watch calls changed after each write under the policy prefix, until ctx
// is done; Consul errors are retried with backoff and jitter.
func (src *Source) Watch(ctx context.Context, changed func()) error {
	return state.WatchKV(ctx, src.store.kv, src.store.PolicyPrefix(), src.lastIndex.Load(), changed)
}
