package xds

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// orderedTypes is the order in which a snapshot change answers a node's
// open watches (ordered ADS): clusters and their endpoints before the
// listeners and routes that use them, secrets last.
var orderedTypes = [...]string{
	resourcev3.ClusterType,
	resourcev3.EndpointType,
	resourcev3.ListenerType,
	resourcev3.RouteType,
	resourcev3.SecretType,
}

// encoded is one resource marshaled once: shared, immutable, by every
// response of every node that carries it.
type encoded struct {
	id   uint64 // unique within its encoder
	name string
	// hash is the hex SHA-256 (first 8 bytes) of the deterministic encoding.
	hash string
	any  *anypb.Any
	// items counts what the resource carries that a proxy would lose
	// without it: the routes of a RouteConfiguration, the LbEndpoints of a
	// ClusterLoadAssignment; 0 for other types.
	items int
}

// countItems is encoded.items of m.
func countItems(m proto.Message) int {
	n := 0
	switch v := m.(type) {
	case *routev3.RouteConfiguration:
		for _, vh := range v.GetVirtualHosts() {
			n += len(vh.GetRoutes())
		}
	case *endpointv3.ClusterLoadAssignment:
		for _, l := range v.GetEndpoints() {
			n += len(l.GetLbEndpoints())
		}
	}
	return n
}

// typeSnapshot is what a node has of one resource type.
type typeSnapshot struct {
	// version hashes every resource of the type, in name order.
	version string
	list    []*encoded // sorted by name
	// items is the sum of the resources' items (routes, endpoints).
	items int
	// prevVersion and changed, when set, say that this snapshot is the one
	// of version prevVersion with the resources of changed (sorted by name)
	// replaced, and nothing else: a stream up to date with prevVersion needs
	// exactly those (see respond). Set by an endpoint-only update.
	prevVersion string
	changed     []*encoded
}

// nodeSnapshot is a node's configuration, immutable once built.
type nodeSnapshot struct {
	types map[string]*typeSnapshot
}

// items is the number of routes (RouteType) or endpoints (EndpointType) in
// the snapshot.
func (snap *nodeSnapshot) items(typeURL string) int {
	if ts := snap.types[typeURL]; ts != nil {
		return ts.items
	}
	return 0
}

// encoder marshals each distinct resource message once, and versions each
// distinct list of them once. Nodes of one model share their messages
// (translate.Cache), so it keys by message pointer. One encoder serves one
// model generation; safe for concurrent use.
type encoder struct {
	// byMessage maps a weak reference to a message (messageKey) to its
	// encoding: a node's own messages (its listeners, its inbound
	// cluster) are garbage once its snapshot is built, and the entry goes
	// with them; the shared ones stay alive in the translate.Cache.
	byMessage sync.Map
	lists     sync.Map // string of encoded ids -> *typeSnapshot
	nextID    atomic.Uint64
}

func newEncoder() *encoder { return &encoder{} }

// messageKey is the byMessage key of m: a weak pointer, so that the memo
// does not keep m alive, and the cleanup that removes the entry once m is
// collected.
func messageKey[T any](e *encoder, m *T) (any, func()) {
	key := weak.Make(m)
	return key, func() { runtime.AddCleanup(m, func(k weak.Pointer[T]) { e.byMessage.Delete(k) }, key) }
}

func (e *encoder) encode(typeURL, name string, m proto.Message) (*encoded, error) {
	var key any = m // other message types: a strong reference
	cleanup := func() {}
	switch v := m.(type) {
	case *clusterv3.Cluster:
		key, cleanup = messageKey(e, v)
	case *endpointv3.ClusterLoadAssignment:
		key, cleanup = messageKey(e, v)
	case *listenerv3.Listener:
		key, cleanup = messageKey(e, v)
	case *routev3.RouteConfiguration:
		key, cleanup = messageKey(e, v)
	case *tlsv3.Secret:
		key, cleanup = messageKey(e, v)
	}
	if enc, ok := e.byMessage.Load(key); ok {
		return enc.(*encoded), nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal %s %q: %w", typeURL, name, err)
	}
	sum := sha256.Sum256(b)
	enc := &encoded{id: e.nextID.Add(1), name: name, hash: hex.EncodeToString(sum[:8]), any: &anypb.Any{TypeUrl: typeURL, Value: b},
		items: countItems(m)}
	actual, loaded := e.byMessage.LoadOrStore(key, enc)
	if !loaded {
		cleanup()
	}
	return actual.(*encoded), nil
}

// typeSnapshot returns the versioned snapshot of list, built once per
// distinct list (many nodes have the same endpoints, secrets...).
func (e *encoder) typeSnapshot(list []*encoded) *typeSnapshot {
	key := make([]byte, 0, 8*len(list))
	for _, enc := range list {
		key = binary.LittleEndian.AppendUint64(key, enc.id)
	}
	if ts, ok := e.lists.Load(string(key)); ok {
		return ts.(*typeSnapshot)
	}
	ts, _ := e.lists.LoadOrStore(string(key), newTypeSnapshot(list))
	return ts.(*typeSnapshot)
}

// newTypeSnapshot versions a type's encoded resources (sorted by name).
func newTypeSnapshot(list []*encoded) *typeSnapshot {
	h := sha256.New()
	byName := func(a, b *encoded) int { return strings.Compare(a.name, b.name) }
	ts := &typeSnapshot{list: slices.Clone(list)}
	if !slices.IsSortedFunc(ts.list, byName) { // translate sorts its output
		slices.SortFunc(ts.list, byName)
	}
	for _, e := range ts.list {
		h.Write([]byte(e.name))
		h.Write([]byte{0})
		h.Write([]byte(e.hash))
		ts.items += e.items
	}
	ts.version = hex.EncodeToString(h.Sum(nil)[:8])
	return ts
}

// watch is an open request of one stream for one type.
type watch struct {
	req *cachev3.Request
	sub cachev3.Subscription
	out chan cachev3.Response
}

// cacheNode is what the cache holds for one node id.
type cacheNode struct {
	snap    *nodeSnapshot
	watches map[int64]*watch
	// sent is the version of the last response of each type made for the
	// node: a NACK of it is not answered with it again (rejected).
	sent map[string]string
}

// rejected reports whether req is a NACK (error_detail) while the node's
// snapshot holds, of its type, the version last sent: answering at once
// would send the rejected version again, which the proxy would reject
// again, in a loop. The watch stays open until the type's version changes,
// or for nackRetry: the rejection may be transient (a port in use for a
// moment), so the version is sent again then.
func (n *cacheNode) rejected(req *cachev3.Request, snap *nodeSnapshot) bool {
	if req.GetErrorDetail() == nil {
		return false
	}
	ts := snap.types[req.GetTypeUrl()]
	return ts != nil && n.sent[req.GetTypeUrl()] == ts.version
}

// respond is respond for one of the node's watches, nil when it must wait
// (nothing new, or rejected); it records the version it answers.
func (n *cacheNode) respond(req *cachev3.Request, sub cachev3.Subscription, snap *nodeSnapshot) cachev3.Response {
	if n.rejected(req, snap) {
		return nil
	}
	resp := respond(req, sub, snap)
	if resp != nil {
		n.sent[req.GetTypeUrl()] = resp.GetResponseVersion()
	}
	return resp
}

// snapshotCache serves pre-encoded node snapshots to go-control-plane's
// state-of-the-world server (it implements cachev3.Cache). Unlike
// go-control-plane's SnapshotCache it marshals nothing per response: every
// response is a slice of shared, pre-encoded resources. Clusters and
// Listeners are sent whole in every response (state of the world); for
// RouteConfigurations, ClusterLoadAssignments and Secrets a response carries
// only the subscribed resources this stream has not received in their
// current version, as docs/xds.md allows (the proxy keeps the others).
type snapshotCache struct {
	mu      sync.Mutex
	nodes   map[string]*cacheNode
	watchID int64
	// nackRetry is how long after a NACK the rejected version is sent
	// again, unless a new one is sent first (see cacheNode.rejected).
	nackRetry time.Duration
}

// defaultNackRetry is snapshotCache.nackRetry.
const defaultNackRetry = time.Second

var _ cachev3.Cache = (*snapshotCache)(nil)

func newSnapshotCache() *snapshotCache {
	return &snapshotCache{nodes: map[string]*cacheNode{}, nackRetry: defaultNackRetry}
}

func (c *snapshotCache) node(id string) *cacheNode {
	n, ok := c.nodes[id]
	if !ok {
		n = &cacheNode{watches: map[int64]*watch{}, sent: map[string]string{}}
		c.nodes[id] = n
	}
	return n
}

// setSnapshot makes snap the node's configuration and answers the node's
// open watches it changes, in orderedTypes order.
func (c *snapshotCache) setSnapshot(ctx context.Context, id string, snap *nodeSnapshot) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(id)
	n.snap = snap
	for _, typeURL := range orderedTypes {
		for wid, w := range n.watches {
			if w.req.GetTypeUrl() != typeURL {
				continue
			}
			resp := n.respond(w.req, w.sub, snap)
			if resp == nil {
				continue
			}
			delete(n.watches, wid)
			select {
			case w.out <- resp:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
	return nil
}

// clear forgets a node.
func (c *snapshotCache) clear(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.nodes, id)
}

// CreateWatch answers req at once when the node's snapshot has something
// the stream lacks, else keeps the watch open until it does.
func (c *snapshotCache) CreateWatch(req *cachev3.Request, sub cachev3.Subscription, out chan cachev3.Response) (func(), error) {
	id := req.GetNode().GetId()
	c.mu.Lock()
	defer c.mu.Unlock()
	n := c.node(id)
	if n.snap != nil {
		if resp := n.respond(req, sub, n.snap); resp != nil {
			out <- resp // the server's channel has room for one response per type
			return func() {}, nil
		}
	}
	c.watchID++
	wid := c.watchID
	n.watches[wid] = &watch{req: req, sub: sub, out: out}
	if n.snap != nil && n.rejected(req, n.snap) {
		time.AfterFunc(c.nackRetry, func() { c.retryRejected(id, wid) })
	}
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		if n, ok := c.nodes[id]; ok {
			delete(n.watches, wid)
		}
	}, nil
}

// retryRejected answers the watch wid of node id, opened by a NACK, with
// the node's current snapshot (the rejected version, if it did not change),
// unless it was answered or closed since.
func (c *snapshotCache) retryRejected(id string, wid int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, ok := c.nodes[id]
	if !ok {
		return
	}
	w, ok := n.watches[wid]
	if !ok || n.snap == nil {
		return
	}
	resp := respond(w.req, w.sub, n.snap)
	if resp == nil {
		return
	}
	select {
	case w.out <- resp: // the watch's channel has room: nothing was sent on it
		delete(n.watches, wid)
		n.sent[w.req.GetTypeUrl()] = resp.GetResponseVersion()
	default:
	}
}

// CreateDeltaWatch refuses: meshgate serves state-of-the-world xDS.
func (c *snapshotCache) CreateDeltaWatch(*cachev3.DeltaRequest, cachev3.Subscription, chan cachev3.DeltaResponse) (func(), error) {
	return nil, status.Error(codes.Unimplemented, "incremental (delta) xDS is not served: use state-of-the-world ADS")
}

// Fetch answers a REST request with the whole requested state.
func (c *snapshotCache) Fetch(ctx context.Context, req *cachev3.Request) (cachev3.Response, error) {
	c.mu.Lock()
	n, ok := c.nodes[req.GetNode().GetId()]
	c.mu.Unlock()
	if !ok || n.snap == nil {
		return nil, errors.New("no configuration for this node")
	}
	ts := n.snap.types[req.GetTypeUrl()]
	if ts == nil {
		ts = newTypeSnapshot(nil)
	}
	if req.GetVersionInfo() == ts.version {
		return nil, &types.SkipFetchError{}
	}
	return newFullResponse(ctx, req, ts.version, selectNames(ts, req.GetResourceNames()), nil), nil
}

// respond builds the response to an open watch, or nil when the stream
// already has everything it subscribed to in its current version.
func respond(req *cachev3.Request, sub cachev3.Subscription, snap *nodeSnapshot) cachev3.Response {
	typeURL := req.GetTypeUrl()
	ts := snap.types[typeURL]
	if ts == nil {
		ts = newTypeSnapshot(nil)
	}
	returned := sub.ReturnedResources()
	if cachev3.ResourceRequiresFullStateInSotw(typeURL) {
		if sub.IsWildcard() {
			// A whole-state response to a wildcard subscription is
			// remembered by its version alone (not name by name: that would
			// be a map per stream of every cluster).
			if req.GetVersionInfo() == ts.version && returned[fullStateKey] == ts.version {
				return nil
			}
			return newFullResponse(context.Background(), req, ts.version, ts.list, nil)
		}
		// A subscription by name (grpc-go's, for one): the version is
		// remembered under every subscribed name, those that do not exist
		// included, since go-control-plane forgets, on every request, the
		// returned entries that are not subscribed names (fullStateKey among
		// them).
		subscribed := sub.SubscribedResources()
		if req.GetVersionInfo() == ts.version && hasVersion(returned, subscribed, ts.version) {
			return nil
		}
		return newFullResponse(context.Background(), req, ts.version, selectNames(ts, req.GetResourceNames()), subscribed)
	}
	// Only what changed, among the subscribed names.
	subscribed := sub.SubscribedResources()
	if !sub.IsWildcard() && req.GetVersionInfo() == ts.version && len(returned) == len(subscribed) {
		// The stream accepted this very content and, since, neither its
		// subscription grew (go-control-plane forgets returned resources
		// that are no longer subscribed, so a new name would make returned
		// the shorter) nor did a resource change: nothing to send, and no
		// need to compare every resource.
		return nil
	}
	if ts.prevVersion != "" && !sub.IsWildcard() && req.GetVersionInfo() == ts.prevVersion && len(returned) == len(subscribed) {
		// The stream accepted the previous content (the same reasoning as
		// above): only the replaced resources it subscribes to are new.
		return deltaResponse(req, ts, subscribed, returned)
	}
	candidates := ts.list
	if !sub.IsWildcard() {
		candidates = make([]*encoded, 0, min(len(subscribed), len(ts.list)))
		for _, e := range ts.list {
			if _, ok := subscribed[e.name]; ok {
				candidates = append(candidates, e)
			}
		}
	}
	var changed []*encoded
	for _, e := range candidates {
		if returned[e.name] != e.hash {
			changed = append(changed, e)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	return newResponse(context.Background(), req, ts.version, changed, candidates)
}

// deltaResponse answers a stream holding every subscribed resource of
// ts.prevVersion with those of ts.changed it subscribes to; nil when there
// are none.
func deltaResponse(req *cachev3.Request, ts *typeSnapshot, subscribed map[string]struct{}, returned map[string]string) cachev3.Response {
	var changed []*encoded
	for _, e := range ts.changed {
		if _, ok := subscribed[e.name]; ok {
			changed = append(changed, e)
		}
	}
	if len(changed) == 0 {
		return nil
	}
	anys := make([]*anypb.Any, len(changed))
	held := maps.Clone(returned) // the stream's own: go-control-plane edits it
	for i, e := range changed {
		anys[i] = e.any
		held[e.name] = e.hash
	}
	return &response{
		ctx:      context.Background(),
		req:      req,
		version:  ts.version,
		out:      &discoveryv3.DiscoveryResponse{VersionInfo: ts.version, Resources: anys, TypeUrl: req.GetTypeUrl()},
		returned: held,
	}
}

// selectNames is the type's resources, or those named (all when names is
// empty), in name order.
func selectNames(ts *typeSnapshot, names []string) []*encoded {
	if len(names) == 0 {
		return ts.list
	}
	want := make(map[string]bool, len(names))
	for _, n := range names {
		want[n] = true
	}
	out := make([]*encoded, 0, len(names))
	for _, e := range ts.list {
		if want[e.name] {
			out = append(out, e)
		}
	}
	return out
}

// response is a ready DiscoveryResponse of shared encoded resources.
type response struct {
	ctx      context.Context
	req      *cachev3.Request
	version  string
	out      *discoveryv3.DiscoveryResponse
	returned map[string]string
}

var _ cachev3.Response = (*response)(nil)

// fullStateKey is the returned-resources key under which a whole-state
// (Cluster, Listener) response to a wildcard subscription records its
// version; no resource name is empty. go-control-plane drops it on every
// request of a subscription by name (it is not a subscribed name): such a
// response records its version under each subscribed name instead.
const fullStateKey = ""

// hasVersion reports whether returned holds version for every name of
// subscribed (true when there is none: a stream that unsubscribed from
// every name has nothing to wait for).
func hasVersion(returned map[string]string, subscribed map[string]struct{}, version string) bool {
	for name := range subscribed {
		if returned[name] != version {
			return false
		}
	}
	return true
}

// newFullResponse answers req with the whole state list. The response is
// remembered under fullStateKey when subscribed is nil (a wildcard
// subscription), else under every subscribed name.
func newFullResponse(ctx context.Context, req *cachev3.Request, version string, list []*encoded, subscribed map[string]struct{}) *response {
	anys := make([]*anypb.Any, len(list))
	for i, e := range list {
		anys[i] = e.any
	}
	returned := map[string]string{fullStateKey: version}
	if subscribed != nil {
		returned = make(map[string]string, len(subscribed))
		for name := range subscribed {
			returned[name] = version
		}
	}
	return &response{
		ctx:      ctx,
		req:      req,
		version:  version,
		out:      &discoveryv3.DiscoveryResponse{VersionInfo: version, Resources: anys, TypeUrl: req.GetTypeUrl()},
		returned: returned,
	}
}

// newResponse answers req with list, the resources among held (every
// subscribed resource of the type, each in its current version) that the
// stream lacks. Once it is sent, the stream has all of held: its returned
// resources are exactly those.
func newResponse(ctx context.Context, req *cachev3.Request, version string, list, held []*encoded) *response {
	anys := make([]*anypb.Any, len(list))
	for i, e := range list {
		anys[i] = e.any
	}
	returned := make(map[string]string, len(held))
	for _, e := range held {
		returned[e.name] = e.hash
	}
	return &response{
		ctx:      ctx,
		req:      req,
		version:  version,
		out:      &discoveryv3.DiscoveryResponse{VersionInfo: version, Resources: anys, TypeUrl: req.GetTypeUrl()},
		returned: returned,
	}
}

func (r *response) GetDiscoveryResponse() (*discoveryv3.DiscoveryResponse, error) { return r.out, nil }
func (r *response) GetRequest() *discoveryv3.DiscoveryRequest                     { return r.req }
func (r *response) GetVersion() (string, error)                                   { return r.version, nil }
func (r *response) GetResponseVersion() string                                    { return r.version }
func (r *response) GetReturnedResources() map[string]string                       { return r.returned }
func (r *response) GetContext() context.Context                                   { return r.ctx }
