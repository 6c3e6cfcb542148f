package conformance

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	gatewayv1 "sigs.k8s.io/gateway-api/apis/v1"
	gatewayv1alpha2 "sigs.k8s.io/gateway-api/apis/v1alpha2"
	gatewayv1beta1 "sigs.k8s.io/gateway-api/apis/v1beta1"
)

// statusInterval is how often the control plane's status is copied.
const statusInterval = 250 * time.Millisecond

// Fixed addresses inside the runner's network namespace.
const (
	xdsAddress   = "127.0.0.1:15010"
	adminAddress = "127.0.0.1:15000"
)

// world is the runner's stand-in for a Kubernetes cluster with meshgate
// installed: the fake API server the suite talks to, and the meshgate
// processes and echo backends that the objects in it translate to. Every
// change the suite makes to the fake client triggers a sync: the objects are
// translated to policy files for the control plane, processes are started or
// stopped, and status is written back.
type world struct {
	t       *testing.T
	base    client.Client // the fake client, without the sync hook
	client  client.Client // what the suite gets: base plus the sync hook
	dir     string        // the control plane's policy directory
	dataDir string

	kick chan struct{} // a change to sync

	mu       sync.Mutex
	backends map[objKey]*backend // per Deployment
	gateways map[objKey]*proc    // gateway processes per Gateway
	addrs    map[objKey]string   // the IP each Gateway binds, 127.0.0.N
	nextIP   int
	nextPod  int               // the number of pod IPs given (see podIP)
	problems map[objKey]string // resources not accepted, as last logged
	synced   chan struct{}     // closed and replaced after each sync
}

// objKey names an object: kind, namespace, name.
type objKey struct{ kind, namespace, name string }

func (k objKey) String() string { return k.kind + "/" + k.namespace + "/" + k.name }

// backend is one Deployment's "pod": an echo server with a port per
// protocol.
type backend struct {
	pod       string // pod name
	namespace string
	ip        string // the pod's IP in the fake cluster: a name (see podIP)
	labels    map[string]string
	httpPort  string
	h2cPort   string
	// httpsPort serves TLS with the certificate of the Secret its
	// Deployment mounts (the suite's tls-backend), "" without one.
	httpsPort string
	grpc      bool // the suite's gRPC echo (GRPC_ECHO_SERVER): h2c on httpPort
	proc      *proc
	log       *podLog                 // its output, for the pod log API (podlogs_test.go)
	sidecars  map[string]*meshSidecar // in a mesh namespace: per Service selecting it

	// In a mesh namespace: the pod's gRPC echo (grpcProc) and the address
	// its sidecars forward to (appAddr: startMeshApp's mux).
	grpcProc *proc
	appAddr  string
	// tcp: the echo server runs in its TCP mode (TCP_ECHO_SERVER), on
	// httpPort.
	tcp bool
}

// sidecarAddrs are the listeners of a mesh backend's sidecar.
type sidecarAddrs struct{ inbound, outbound, admin string }

func newScheme() *runtime.Scheme {
	s := runtime.NewScheme()
	for _, add := range []func(*runtime.Scheme) error{
		clientgoscheme.AddToScheme, apiextensionsv1.AddToScheme,
		gatewayv1.Install, gatewayv1beta1.Install, gatewayv1alpha2.Install,
	} {
		if err := add(s); err != nil {
			panic(err)
		}
	}
	return s
}

// newWorld starts the control plane and returns the world with its client.
func newWorld(t *testing.T, ctx context.Context) *world {
	w := &world{
		t: t, dir: t.TempDir(), dataDir: t.TempDir(),
		kick:     make(chan struct{}, 1),
		backends: map[objKey]*backend{}, gateways: map[objKey]*proc{},
		addrs: map[objKey]string{}, nextIP: 2, synced: make(chan struct{}),
	}
	w.base = fake.NewClientBuilder().WithScheme(newScheme()).
		WithStatusSubresource(&gatewayv1.Gateway{}, &gatewayv1.HTTPRoute{}, &gatewayv1.GRPCRoute{}, &gatewayv1.TCPRoute{}, &gatewayv1.TLSRoute{}, &gatewayv1.GatewayClass{}, &corev1.Pod{}, &gatewayv1.ListenerSet{},
			&gatewayv1.BackendTLSPolicy{}).
		Build()
	changed := func() {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
	w.client = interceptor.NewClient(w.base.(client.WithWatch), interceptor.Funcs{
		Create: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
			obj.SetGeneration(1)
			if created := obj.GetCreationTimestamp(); created.IsZero() {
				// As the API server: the creation time orders conflicting routes.
				obj.SetCreationTimestamp(metav1.Now())
			}
			err := c.Create(ctx, obj, opts...)
			changed()
			return err
		},
		Update: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
			if old := stored(ctx, c, obj); old != nil {
				obj.SetGeneration(nextGeneration(old, obj))
			}
			err := c.Update(ctx, obj, opts...)
			changed()
			return err
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			old := stored(ctx, c, obj)
			err := c.Patch(ctx, obj, patch, opts...)
			if err == nil && old != nil {
				if gen := nextGeneration(old, obj); gen != obj.GetGeneration() {
					obj.SetGeneration(gen)
					err = c.Update(ctx, obj)
				}
			}
			changed()
			return err
		},
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			err := c.Delete(ctx, obj, opts...)
			changed()
			return err
		},
	})
	w.start(ctx, "controlplane", "controlplane", "--config", w.dir, "--data-dir", w.dataDir,
		"--xds-address", xdsAddress, "--admin-address", adminAddress)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(filepath.Join(w.dataDir, "admin-token")); err == nil {
			if resp, err := http.Get("http://" + adminAddress + "/healthz"); err == nil {
				resp.Body.Close()
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the control plane did not come up within 30s")
		}
		time.Sleep(50 * time.Millisecond) // polling with a deadline
	}
	go w.loop(ctx)
	return w
}

// stored is the object as the fake cluster holds it now, or nil.
func stored(ctx context.Context, c client.Client, obj client.Object) client.Object {
	old, ok := obj.DeepCopyObject().(client.Object)
	if !ok || c.Get(ctx, client.ObjectKeyFromObject(obj), old) != nil {
		return nil
	}
	return old
}

// nextGeneration is the generation of obj replacing old, as the API server
// sets it (the fake client does not): old's, plus one when the spec
// changed.
func nextGeneration(old, obj client.Object) int64 {
	gen := max(old.GetGeneration(), 1)
	a, errA := runtime.DefaultUnstructuredConverter.ToUnstructured(old)
	b, errB := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if errA == nil && errB == nil && !equality.Semantic.DeepEqual(a["spec"], b["spec"]) {
		gen++
	}
	return gen
}

// loop syncs after every change, coalescing bursts, and copies the control
// plane's status every statusInterval (it reloads the policy files on its
// own time).
func (w *world) loop(ctx context.Context) {
	tick := time.NewTicker(statusInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			if err := w.refreshStatus(ctx); err != nil && ctx.Err() == nil {
				w.t.Logf("status: %v", err)
			}
			continue
		case <-w.kick:
		}
		if err := w.sync(ctx); err != nil && ctx.Err() == nil {
			w.t.Logf("sync: %v", err)
		}
		w.mu.Lock()
		close(w.synced)
		w.synced = make(chan struct{})
		w.mu.Unlock()
	}
}

// sync translates the fake cluster into meshgate's policy directory and
// processes, then writes status.
func (w *world) sync(ctx context.Context) error {
	objs, err := w.snapshot(ctx)
	if err != nil {
		return err
	}
	if err := w.syncBackends(ctx, objs); err != nil {
		return err
	}
	w.mu.Lock()
	w.syncSidecars(ctx, objs)
	for _, gw := range objs.gateways {
		k := keyOf("Gateway", &gw)
		if _, ok := w.addrs[k]; !ok {
			w.addrs[k] = fmt.Sprintf("127.0.0.%d", w.nextIP)
			w.nextIP++
		}
	}
	tr := translator{addrs: w.addrs, backends: w.backends}
	w.mu.Unlock()
	served := map[string][]byte{}
	for _, d := range tr.translate(objs) {
		served[d.file] = d.yaml
	}
	if err := writeDir(w.dir, served); err != nil {
		return err
	}
	w.syncGateways(ctx, objs)
	return w.refreshStatus(ctx)
}

// refreshStatus writes the control plane's current status of every
// resource to the fake cluster, and logs the resources meshgate does not
// accept (once per change).
func (w *world) refreshStatus(ctx context.Context) error {
	objs, err := w.snapshot(ctx)
	if err != nil {
		return err
	}
	res, err := w.fetchResources(ctx)
	if err != nil {
		return err
	}
	w.mu.Lock()
	problems := map[objKey]string{}
	for _, it := range res.Items {
		k := objKey{kind: it.Kind, namespace: it.Namespace, name: it.Name}
		if it.State != "Accepted" || len(it.Problems) > 0 {
			problems[k] = it.State + ": " + strings.Join(it.Problems, "; ")
			if w.problems[k] != problems[k] {
				w.t.Logf("meshgate: %s %s", k, problems[k])
			}
		}
	}
	w.problems = problems
	w.mu.Unlock()
	return writeStatus(ctx, w.base, objs, res)
}

var validateLine = regexp.MustCompile(`^(?:.*/)?([^/:]+\.yaml):\d+: (.*)$`)

// validate runs `meshgate validate` on dir and returns its problems (not
// its warnings) by file name.
func validate(dir string) (map[string][]string, error) {
	var out bytes.Buffer
	cmd := exec.Command(bins.meshgate, "validate", "-f", dir)
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	errs := map[string][]string{}
	for _, line := range strings.Split(out.String(), "\n") {
		if strings.HasPrefix(line, "warning:") {
			continue // accepted as written, with a note
		}
		if m := validateLine.FindStringSubmatch(line); m != nil {
			errs[m[1]] = append(errs[m[1]], m[2])
		}
	}
	if err != nil && len(errs) == 0 {
		return nil, fmt.Errorf("meshgate validate: %v: %s", err, out.String())
	}
	return errs, nil
}

// writeDir makes dir hold exactly files, rewriting only what changed (the
// control plane watches it).
func writeDir(dir string, files map[string][]byte) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if _, ok := files[e.Name()]; !ok {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil {
				return err
			}
		}
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		p := filepath.Join(dir, n)
		if old, err := os.ReadFile(p); err == nil && bytes.Equal(old, files[n]) {
			continue
		}
		if err := os.WriteFile(p+".tmp", files[n], 0o644); err != nil {
			return err
		}
		if err := os.Rename(p+".tmp", p); err != nil {
			return err
		}
	}
	return nil
}

// objects is one snapshot of the fake cluster.
type objects struct {
	namespaces      []corev1.Namespace
	services        []corev1.Service
	deployments     []appsv1.Deployment
	gateways        []gatewayv1.Gateway
	httpRoutes      []gatewayv1.HTTPRoute
	grpcRoutes      []gatewayv1.GRPCRoute
	tcpRoutes       []gatewayv1.TCPRoute
	tlsRoutes       []gatewayv1.TLSRoute
	referenceGrants []gatewayv1.ReferenceGrant
	gatewayClasses  []gatewayv1.GatewayClass
	listenerSets    []gatewayv1.ListenerSet
	endpointSlices  []discoveryv1.EndpointSlice
	secrets         []corev1.Secret
	configMaps      []corev1.ConfigMap
	backendTLS      []gatewayv1.BackendTLSPolicy
}

func (w *world) snapshot(ctx context.Context) (*objects, error) {
	var (
		o   objects
		ns  corev1.NamespaceList
		svc corev1.ServiceList
		dep appsv1.DeploymentList
		gw  gatewayv1.GatewayList
		hr  gatewayv1.HTTPRouteList
		gr  gatewayv1.GRPCRouteList
		tr  gatewayv1.TCPRouteList
		tl  gatewayv1.TLSRouteList
		rg  gatewayv1.ReferenceGrantList
		gc  gatewayv1.GatewayClassList
		es  discoveryv1.EndpointSliceList
		ls  gatewayv1.ListenerSetList
		sec corev1.SecretList
		cm  corev1.ConfigMapList
		bt  gatewayv1.BackendTLSPolicyList
	)
	for _, l := range []client.ObjectList{&ns, &svc, &dep, &gw, &hr, &gr, &tr, &tl, &rg, &gc, &es, &ls, &sec, &cm, &bt} {
		if err := w.base.List(ctx, l); err != nil {
			return nil, fmt.Errorf("listing %T: %w", l, err)
		}
	}
	o.namespaces, o.services, o.deployments = ns.Items, svc.Items, dep.Items
	o.gateways, o.httpRoutes, o.grpcRoutes, o.referenceGrants, o.gatewayClasses = gw.Items, hr.Items, gr.Items, rg.Items, gc.Items
	o.endpointSlices, o.listenerSets, o.secrets = es.Items, ls.Items, sec.Items
	o.configMaps, o.backendTLS = cm.Items, bt.Items
	o.tcpRoutes, o.tlsRoutes = tr.Items, tl.Items
	return &o, nil
}

// secretFiles writes the files of the Secret volumes the Deployment's
// first container mounts (as the kubelet would) and returns their paths by
// the path the container sees; ready is false when one of those Secrets
// does not exist yet.
func (w *world) secretFiles(d appsv1.Deployment, secrets []corev1.Secret) (map[string]string, bool) {
	out := map[string]string{}
	cs := d.Spec.Template.Spec.Containers
	if len(cs) == 0 {
		return out, true
	}
	for _, vm := range cs[0].VolumeMounts {
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != vm.Name || v.Secret == nil {
				continue
			}
			i := slices.IndexFunc(secrets, func(s corev1.Secret) bool { return s.Namespace == d.Namespace && s.Name == v.Secret.SecretName })
			if i < 0 {
				return nil, false
			}
			dir := w.t.TempDir()
			items := v.Secret.Items
			if len(items) == 0 {
				for key := range secrets[i].Data {
					items = append(items, corev1.KeyToPath{Key: key, Path: key})
				}
			}
			for _, it := range items {
				path := filepath.Join(dir, it.Path)
				if err := os.WriteFile(path, secrets[i].Data[it.Key], 0o600); err != nil {
					w.t.Errorf("secret volume %s: %v", v.Name, err)
					return nil, false
				}
				out[filepath.Join(vm.MountPath, it.Path)] = path
			}
		}
	}
	return out, true
}

// containerEnv is the literal value of an environment variable of the
// Deployment's first container, "" when it has none.
func containerEnv(d appsv1.Deployment, name string) string {
	if cs := d.Spec.Template.Spec.Containers; len(cs) > 0 {
		for _, e := range cs[0].Env {
			if e.Name == name {
				return e.Value
			}
		}
	}
	return ""
}

func keyOf(kind string, o metav1.Object) objKey {
	return objKey{kind: kind, namespace: o.GetNamespace(), name: o.GetName()}
}

// syncBackends starts an echo backend (and, in a mesh namespace, its
// sidecar) per Deployment, stops those of deleted ones, and keeps a ready
// Pod object per backend in the fake cluster.
func (w *world) syncBackends(ctx context.Context, objs *objects) error {
	want := map[objKey]appsv1.Deployment{}
	for _, d := range objs.deployments {
		want[keyOf("Deployment", &d)] = d
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, b := range w.backends {
		if _, ok := want[k]; !ok {
			b.proc.stop()
			if b.grpcProc != nil {
				b.grpcProc.stop()
			}
			for _, sc := range b.sidecars {
				sc.proc.stop()
			}
			delete(w.backends, k)
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: b.pod, Namespace: b.namespace}}
			if err := w.base.Delete(ctx, pod); err != nil && !apierrors.IsNotFound(err) {
				return err
			}
		}
	}
	for k, d := range want {
		if _, ok := w.backends[k]; ok {
			continue
		}
		// A backend serving TLS (TLS_SERVER_CERT and TLS_SERVER_PRIVKEY
		// from a mounted Secret) waits for its Secret.
		tlsEnv, ok := w.backendTLSFiles(ctx, d)
		if !ok {
			continue
		}
		files, ready := w.secretFiles(d, objs.secrets)
		if !ready {
			continue // a Secret it mounts is not there yet: started when it is
		}
		// The suite takes the backend's name from the pod's by dropping
		// the last two segments (<deployment>-<replicaset hash>-<pod hash>).
		w.nextPod++
		b := &backend{pod: d.Name + "-7c9d8f6b5-x0000", namespace: d.Namespace, labels: d.Spec.Template.Labels,
			ip: podIP(w.nextPod), httpPort: freePort(w.t), h2cPort: freePort(w.t)}
		httpsPort := freePort(w.t)
		if len(tlsEnv) > 0 {
			b.httpsPort = httpsPort
		}
		b.proc = w.start(ctx, "echo "+k.String(), bins.echo)
		b.log = &podLog{}
		b.proc.cmd.Stdout = io.MultiWriter(b.proc.out, b.log)
		b.proc.cmd.Env = append(os.Environ(), "HTTP_PORT="+b.httpPort, "H2C_PORT="+b.h2cPort, "HTTPS_PORT="+httpsPort,
			"POD_NAME="+b.pod, "NAMESPACE="+d.Namespace)
		b.proc.cmd.Env = append(b.proc.cmd.Env, tlsEnv...)
		if v := containerEnv(d, "TCP_ECHO_SERVER"); v != "" {
			// The suite's TCP echo backends (TCPRoute, TLSRoute): the
			// echo server in its TCP mode, plaintext on the backend's
			// HTTP port, TLS (with the certificate of its Secret volume)
			// on its h2c port.
			b.tcp = true
			b.proc.cmd.Env = append(b.proc.cmd.Env, "TCP_ECHO_SERVER="+v, "TCP_PORT="+b.httpPort, "TLS_PORT="+b.h2cPort,
				"SERVICE_NAME="+containerEnv(d, "SERVICE_NAME"))
			for _, name := range []string{"TLS_SERVER_CERT", "TLS_SERVER_PRIV_KEY"} {
				if path := files[containerEnv(d, name)]; path != "" {
					b.proc.cmd.Env = append(b.proc.cmd.Env, name+"="+path)
				}
			}
		}
		if grpcEcho(d) {
			b.grpc = true
			b.proc.cmd.Env = append(b.proc.cmd.Env, "GRPC_ECHO_SERVER=1")
		}
		w.run(b.proc)
		b.appAddr = "127.0.0.1:" + b.httpPort
		if isMeshNamespace(d.Namespace) && !b.grpc {
			grpcPort := freePort(w.t)
			b.grpcProc = w.start(ctx, "grpc echo "+k.String(), bins.echo)
			b.grpcProc.cmd.Stdout = io.MultiWriter(b.grpcProc.out, b.log)
			b.grpcProc.cmd.Env = append(os.Environ(), "GRPC_ECHO_SERVER=1", "HTTP_PORT="+grpcPort, "POD_NAME="+b.pod, "NAMESPACE="+d.Namespace)
			w.run(b.grpcProc)
			b.appAddr = w.startMeshApp(ctx, b.appAddr, "127.0.0.1:"+grpcPort)
		}
		w.backends[k] = b
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: b.pod, Namespace: d.Namespace, Labels: d.Spec.Template.Labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "echo", Image: "echo"}}},
		}
		if err := w.base.Create(ctx, pod); err != nil && !apierrors.IsAlreadyExists(err) {
			return err
		}
		pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: b.ip, PodIPs: []corev1.PodIP{{IP: b.ip}},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
		if err := w.base.Status().Update(ctx, pod); err != nil {
			return err
		}
	}
	return nil
}

// grpcEcho reports whether a Deployment runs the suite's gRPC echo server
// (its container sets GRPC_ECHO_SERVER), as the grpc-infra backends do.
func grpcEcho(d appsv1.Deployment) bool {
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == "GRPC_ECHO_SERVER" && e.Value != "" {
				return true
			}
		}
	}
	return false
}

// podIP is the n-th pod IP (n from 1), from 10.244.0.0/16 (kind's default
// pod network). A pod IP is a name, not an address anything listens on: the
// network namespace has loopback only. An EndpointSlice that lists it is
// translated to the loopback address of that pod's echo process (see
// translator.service).
func podIP(n int) string {
	return fmt.Sprintf("10.244.%d.%d", n>>8&0xff, n&0xff)
}

// syncGateways runs a gateway process per Gateway (one that meshgate does
// not serve gets no configuration).
func (w *world) syncGateways(ctx context.Context, objs *objects) {
	want := map[objKey]bool{}
	for _, gw := range objs.gateways {
		want[keyOf("Gateway", &gw)] = true
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for k, p := range w.gateways {
		if !want[k] {
			p.stop()
			delete(w.gateways, k)
		}
	}
	for k := range want {
		if w.gateways[k] != nil {
			continue
		}
		tok, err := w.token(k.name, k.namespace)
		if err != nil {
			w.t.Logf("gateway %s: %v", k, err)
			continue
		}
		w.gateways[k] = w.start(ctx, "gateway "+k.String(), bins.meshgate, "gateway", "--name", k.name, "--namespace", k.namespace,
			"--xds", xdsAddress, "--admin", "127.0.0.1:"+freePort(w.t), "--token", tok, "--drain-delay=0", "--log-level", "warn")
	}
}

// token creates a join token on the control plane.
func (w *world) token(name, namespace string) (string, error) {
	cmd := exec.Command(bins.meshgate, "token", "create", "--service", name, "--namespace", namespace, "--ttl", "2h",
		"--admin", adminAddress, "--data-dir", w.dataDir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("meshgate token create: %w: %s", err, stderr.String())
	}
	return strings.TrimSpace(string(out)), nil
}

// proc is a process the runner started; it is stopped when the test ends.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	once sync.Once
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.b.Len() > 1<<20 { // bounded: keep the start of a chatty process
		return len(p), nil
	}
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// start runs a meshgate subcommand (name is only for logs).
func (w *world) start(ctx context.Context, name string, args ...string) *proc {
	bin := bins.meshgate
	if len(args) > 0 && (args[0] == bins.meshgate || args[0] == bins.echo) {
		bin, args = args[0], args[1:]
	}
	p := &proc{name: name, out: &syncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if bin == bins.echo {
		return p // run by the caller once its environment is set
	}
	w.run(p)
	return p
}

func (w *world) run(p *proc) {
	if err := p.cmd.Start(); err != nil {
		w.t.Errorf("start %s: %v", p.name, err)
		close(p.done)
		return
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	w.t.Cleanup(func() {
		p.stop()
		if w.t.Failed() && testing.Verbose() {
			w.t.Logf("---- output of %s\n%s", p.name, p.out.String())
		}
	})
}

func (p *proc) stop() {
	p.once.Do(func() {
		if p.cmd.Process == nil {
			return
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	})
}

// freePort is a loopback port that was free a moment ago.
func freePort(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	return port
}

// waitSynced waits for a sync that starts after the call.
func (w *world) waitSynced(ctx context.Context) {
	w.mu.Lock()
	ch := w.synced
	w.mu.Unlock()
	select {
	case w.kick <- struct{}{}:
	default:
	}
	select {
	case <-ch:
	case <-ctx.Done():
	}
	w.mu.Lock()
	ch = w.synced
	w.mu.Unlock()
	select {
	case <-ch:
	case <-ctx.Done():
	}
}

// backendTLSFiles writes the certificate and key a Deployment's echo
// container serves TLS with (its TLS_SERVER_CERT and TLS_SERVER_PRIVKEY,
// paths in a volume of a Secret) to files, and returns the environment
// naming them; none for a Deployment without them. ok is false while the
// Secret does not exist yet (a later sync starts the backend).
func (w *world) backendTLSFiles(ctx context.Context, d appsv1.Deployment) (env []string, ok bool) {
	if len(d.Spec.Template.Spec.Containers) == 0 {
		return nil, true
	}
	c := d.Spec.Template.Spec.Containers[0]
	paths := map[string]string{}
	for _, e := range c.Env {
		if e.Name == "TLS_SERVER_CERT" || e.Name == "TLS_SERVER_PRIVKEY" {
			paths[e.Name] = e.Value
		}
	}
	if len(paths) != 2 {
		return nil, true
	}
	dir := w.t.TempDir()
	for name, path := range paths {
		data, found := w.mountedSecretFile(ctx, d, c, path)
		if !found {
			return nil, false
		}
		file := filepath.Join(dir, name)
		if err := os.WriteFile(file, data, 0o600); err != nil {
			w.t.Errorf("backend TLS files: %v", err)
			return nil, false
		}
		env = append(env, name+"="+file)
	}
	return env, true
}

// mountedSecretFile is the content of the file at path in container c of
// d, from the Secret volume mounted over it (its items, else its keys).
func (w *world) mountedSecretFile(ctx context.Context, d appsv1.Deployment, c corev1.Container, path string) ([]byte, bool) {
	for _, m := range c.VolumeMounts {
		rel, found := strings.CutPrefix(path, strings.TrimSuffix(m.MountPath, "/")+"/")
		if !found {
			continue
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Name != m.Name || v.Secret == nil {
				continue
			}
			var sec corev1.Secret
			if err := w.base.Get(ctx, client.ObjectKey{Namespace: d.Namespace, Name: v.Secret.SecretName}, &sec); err != nil {
				return nil, false
			}
			key := rel
			for _, it := range v.Secret.Items {
				if it.Path == rel {
					key = it.Key
				}
			}
			data, ok := sec.Data[key]
			return data, ok
		}
	}
	return nil, false
}
