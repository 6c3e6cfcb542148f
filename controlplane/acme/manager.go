// Package acme obtains and renews the certificates of the gateways' HTTPS
// listeners that name an ACMEIssuer, with certmagic: certmagic decides when
// to obtain and renew, keeps the certificates, keys and account keys in a
// Storage (the control plane's state: a directory, or Consul KV shared by
// the replicas, with Consul session locks), and the Manager answers the
// CA's challenges through the gateways themselves: an HTTP-01 challenge
// is a route of their plaintext listeners (model.WithACME) that the
// control plane pushes, and waits for them to serve, before the CA is
// asked to validate.
package acme

import (
	"cmp"
	"context"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3/acme"
	"go.uber.org/zap"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/controlplane/state"
	"github.com/meshgate/meshgate/policy"
)

// DefaultRenewCheckInterval is how often the certificates are checked
// for renewal (and re-read from the storage, where another replica may
// have renewed them).
const DefaultRenewCheckInterval = 10 * time.Minute

// Options configure a Manager.
type Options struct {
	// Store is the control plane's state: where certificates, their keys
	// and the account keys are kept.
	Store  state.Store
	Logger *slog.Logger
	// OnChange is called when the material changes (a certificate
	// obtained or renewed, a challenge to answer or answered): the
	// control plane reloads, and calls Applied with the Generation of the
	// material it serves.
	OnChange func()
	// Ready, if set, returns once every gateway serves the configuration
	// the control plane last pushed (or ctx is done): a challenge is
	// validated only then.
	Ready func(ctx context.Context) error
	// RenewCheckInterval: DefaultRenewCheckInterval when zero.
	RenewCheckInterval time.Duration
}

// Manager obtains and renews the ACME listeners' certificates. Create it
// with New, give it the listeners of every model (Sync), and serve its
// Material.
type Manager struct {
	opts    Options
	logger  *slog.Logger
	storage *Storage

	// ctx bounds the management.
	ctx context.Context
	// watchOnce starts watchChallenges, with the first ACME listener.
	watchOnce sync.Once

	mu sync.Mutex
	// issuers by the key of their spec (issuerKeyOf).
	issuers map[string]*managedIssuer
	// certs are the certificates held, by hostname.
	certs map[string]*held
	// local are the challenges this replica presented, shared those
	// every replica did (read from the storage), by sharedChallenge.key.
	local, shared map[string]sharedChallenge
	// errs are the last failures, by hostname (cleared by a success).
	errs map[string]string
	// generation counts the changes of the material; applied is the
	// generation the gateways were last given.
	generation, applied uint64
	appliedCh           chan struct{} // closed and replaced when applied grows
}

// held is a certificate held for a hostname.
type held struct {
	cert     *model.Certificate
	notAfter time.Time
	serial   string
}

// managedIssuer is one ACMEIssuer's certmagic configuration and the names
// it manages.
type managedIssuer struct {
	spec   model.ACMEIssuer
	cache  *certmagic.Cache
	config *certmagic.Config
	issuer *issuer
	hosts  map[string]bool
}

// New makes a Manager that manages certificates until ctx is done; Run
// runs its periodic work.
func New(ctx context.Context, opts Options) *Manager {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.OnChange == nil {
		opts.OnChange = func() {}
	}
	if opts.RenewCheckInterval <= 0 {
		opts.RenewCheckInterval = DefaultRenewCheckInterval
	}
	return &Manager{ctx: ctx, opts: opts, logger: opts.Logger, storage: NewStorage(opts.Store),
		issuers: map[string]*managedIssuer{}, certs: map[string]*held{}, local: map[string]sharedChallenge{}, shared: map[string]sharedChallenge{},
		errs: map[string]string{}, appliedCh: make(chan struct{})}
}

// Run manages the certificates until ctx is done: it re-reads the stored
// certificates every RenewCheckInterval (another replica may have renewed
// them), and stops every certmagic cache at the end.
func (m *Manager) Run(ctx context.Context) {
	t := time.NewTicker(m.opts.RenewCheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			m.mu.Lock()
			issuers := slices.Collect(maps.Values(m.issuers))
			m.issuers = map[string]*managedIssuer{}
			m.mu.Unlock()
			for _, mi := range issuers {
				mi.cache.Stop()
			}
			return
		case <-t.C:
			m.refreshAll(ctx)
		}
	}
}

// issuerKeyOf identifies an issuer's spec: a changed spec is a new
// issuer.
func issuerKeyOf(spec model.ACMEIssuer) string {
	b, _ := json.Marshal(spec)
	return string(b)
}

// Sync makes the Manager manage the certificates of listeners (those of
// the model being served) and no other: new names are obtained (or loaded
// from the storage) in the background, and names no listener has any
// more are let go. It does not block.
func (m *Manager) Sync(listeners []model.ACMEListener) {
	ctx := m.ctx
	if ctx.Err() != nil {
		return
	}
	if len(listeners) > 0 {
		m.watchOnce.Do(func() { go m.watchChallenges(ctx) })
	}
	want := map[string]map[string]bool{}
	specs := map[string]model.ACMEIssuer{}
	for _, l := range listeners {
		k := issuerKeyOf(l.ACME.Issuer)
		specs[k] = l.ACME.Issuer
		if want[k] == nil {
			want[k] = map[string]bool{}
		}
		want[k][l.ACME.Hostname] = true
	}
	m.mu.Lock()
	var stop []*managedIssuer
	for k, mi := range m.issuers {
		if want[k] == nil {
			stop = append(stop, mi)
			delete(m.issuers, k)
		}
	}
	type manage struct {
		mi    *managedIssuer
		hosts []string
	}
	var start []manage
	for k, hosts := range want {
		mi := m.issuers[k]
		if mi == nil {
			mi = m.newIssuer(specs[k])
			m.issuers[k] = mi
		}
		var add, remove []string
		for h := range hosts {
			if !mi.hosts[h] {
				add = append(add, h)
			}
		}
		for h := range mi.hosts {
			if !hosts[h] {
				remove = append(remove, h)
			}
		}
		mi.hosts = hosts
		if len(remove) > 0 {
			var subjects []certmagic.SubjectIssuer
			for _, h := range remove {
				subjects = append(subjects, certmagic.SubjectIssuer{Subject: h, IssuerKey: mi.issuer.IssuerKey()})
			}
			mi.cache.RemoveManaged(subjects)
		}
		if len(add) > 0 {
			slices.Sort(add)
			start = append(start, manage{mi, add})
		}
	}
	m.mu.Unlock()
	for _, mi := range stop {
		mi.cache.Stop()
	}
	for _, s := range start {
		for _, h := range s.hosts {
			m.refresh(ctx, s.mi, h) // what the storage has, at once
		}
		if err := s.mi.config.ManageAsync(ctx, s.hosts); err != nil {
			m.logger.Error("ACME: cannot manage certificates", "issuer", s.mi.spec.NamespacedName.String(), "hostnames", s.hosts, "error", err)
			m.mu.Lock()
			for _, h := range s.hosts {
				m.errs[h] = err.Error()
			}
			m.mu.Unlock()
		}
	}
}

// newIssuer makes the certmagic configuration of an ACMEIssuer.
func (m *Manager) newIssuer(spec model.ACMEIssuer) *managedIssuer {
	mi := &managedIssuer{spec: spec, hosts: map[string]bool{}}
	mi.issuer = &issuer{spec: spec, storage: m.storage, solver: &solver{m: m}}
	mi.cache = certmagic.NewCache(certmagic.CacheOptions{
		GetConfigForCert:   func(certmagic.Certificate) (*certmagic.Config, error) { return mi.config, nil },
		RenewCheckInterval: m.opts.RenewCheckInterval,
		Logger:             zap.NewNop(),
	})
	mi.config = certmagic.New(mi.cache, certmagic.Config{
		Storage:            m.storage,
		RenewalWindowRatio: spec.RenewalWindowRatio,
		Issuers:            []certmagic.Issuer{mi.issuer},
		// Renewal follows RenewalWindowRatio, not the CA's renewal
		// information; the gateways staple no OCSP.
		DisableARI: true,
		OCSP:       certmagic.OCSPConfig{DisableStapling: true},
		OnEvent: func(ctx context.Context, event string, data map[string]any) error {
			m.event(ctx, mi, event, data)
			return nil
		},
		Logger: zap.NewNop(),
	})
	return mi
}

// event handles certmagic's events: a certificate obtained (or renewed)
// is read from the storage and served; a failure is recorded and logged.
func (m *Manager) event(ctx context.Context, mi *managedIssuer, event string, data map[string]any) {
	name, _ := data["identifier"].(string)
	switch event {
	case "cert_obtained":
		m.logger.Info("ACME: certificate obtained", "hostname", name, "issuer", mi.spec.NamespacedName.String(), "renewal", data["renewal"])
		m.mu.Lock()
		delete(m.errs, name)
		m.mu.Unlock()
		m.refresh(ctx, mi, name)
	case "cached_managed_cert":
		// Loaded from the storage: obtained by another replica (or
		// before a restart).
		sans, _ := data["sans"].([]string)
		for _, san := range sans {
			m.refresh(ctx, mi, san)
		}
	case "cert_failed":
		err, _ := data["error"].(error)
		msg := fmt.Sprint(data["error"])
		var problem acme.Problem
		if errors.As(err, &problem) {
			msg = problem.Error()
		}
		m.logger.Error("ACME: could not obtain a certificate (retried with backoff)", "hostname", name, "issuer", mi.spec.NamespacedName.String(),
			"renewal", data["renewal"], "error", msg)
		m.mu.Lock()
		m.errs[name] = msg
		m.generation++
		m.mu.Unlock()
		m.opts.OnChange()
	}
}

// refreshAll reads every managed certificate from the storage again.
func (m *Manager) refreshAll(ctx context.Context) {
	m.mu.Lock()
	type item struct {
		mi   *managedIssuer
		host string
	}
	var items []item
	for _, mi := range m.issuers {
		for h := range mi.hosts {
			items = append(items, item{mi, h})
		}
	}
	m.mu.Unlock()
	for _, it := range items {
		m.refresh(ctx, it.mi, it.host)
	}
}

// refresh reads host's certificate and key from the storage and, when
// they are new, valid and still wanted, serves them.
func (m *Manager) refresh(ctx context.Context, mi *managedIssuer, host string) {
	issuerKey := mi.issuer.IssuerKey()
	certPEM, err := m.storage.Load(ctx, certmagic.StorageKeys.SiteCert(issuerKey, host))
	if errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err != nil {
		m.logger.Warn("ACME: reading a stored certificate", "hostname", host, "error", err)
		return
	}
	keyPEM, err := m.storage.Load(ctx, certmagic.StorageKeys.SitePrivateKey(issuerKey, host))
	if err != nil {
		m.logger.Warn("ACME: reading a stored certificate's key", "hostname", host, "error", err)
		return
	}
	tc, err := policy.ParseCertificate(certPEM, keyPEM, time.Now())
	if err != nil {
		m.logger.Warn("ACME: a stored certificate cannot be served (it will be obtained anew)", "hostname", host, "error", err)
		return
	}
	serial := ""
	if block, _ := pem.Decode(certPEM); block != nil {
		if leaf, err := x509.ParseCertificate(block.Bytes); err == nil {
			serial = leaf.SerialNumber.Text(16)
		}
	}
	cert := model.NewACMECertificate(host, certPEM, keyPEM)
	m.mu.Lock()
	old := m.certs[host]
	wanted := mi.hosts[host]
	changed := wanted && (old == nil || old.cert.Digest != cert.Digest)
	if changed {
		m.certs[host] = &held{cert: cert, notAfter: tc.NotAfter, serial: serial}
		m.generation++
	}
	m.mu.Unlock()
	if changed {
		m.logger.Info("ACME: serving certificate", "hostname", host, "serial", serial, "notAfter", tc.NotAfter.UTC().Format(time.RFC3339))
		m.opts.OnChange()
	}
}

// Material is what the gateways serve for the ACME listeners now, and its
// generation (for Applied).
func (m *Manager) Material() (model.ACMEMaterial, uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	mat := model.ACMEMaterial{Certificates: make(map[string]*model.Certificate, len(m.certs))}
	for h, c := range m.certs {
		mat.Certificates[h] = c.cert
	}
	all := maps.Clone(m.shared)
	maps.Copy(all, m.local)
	for _, k := range slices.Sorted(maps.Keys(all)) {
		c := all[k]
		switch c.Type {
		case acme.ChallengeTypeHTTP01:
			mat.HTTPChallenges = append(mat.HTTPChallenges, model.HTTPChallenge{Hostname: c.Hostname, Token: c.Token, KeyAuthorization: c.KeyAuthorization})
		case acme.ChallengeTypeTLSALPN01:
			cert := model.NewACMECertificate(c.Hostname, c.CertPEM, c.KeyPEM)
			cert.Secret = model.ACMEChallengeSecret(c.Hostname)
			mat.TLSALPNChallenges = append(mat.TLSALPNChallenges, model.TLSALPNChallenge{Hostname: c.Hostname, Certificate: cert})
		}
	}
	return mat, m.generation
}

// Applied tells the Manager that the gateways were given the material of
// generation gen.
func (m *Manager) Applied(gen uint64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if gen > m.applied {
		m.applied = gen
		close(m.appliedCh)
		m.appliedCh = make(chan struct{})
	}
}

// Status is the state of one listener's certificate.
type Status struct {
	Listener model.ACMEListener
	// Ready: a certificate is served.
	Ready bool
	// NotAfter and Serial describe the certificate served.
	NotAfter time.Time
	Serial   string
	// Error is the last failure to obtain or renew it, if any.
	Error string
}

// Statuses are the states of listeners' certificates.
func (m *Manager) Statuses(listeners []model.ACMEListener) []Status {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]Status, 0, len(listeners))
	for _, l := range listeners {
		s := Status{Listener: l, Error: m.errs[l.ACME.Hostname]}
		if c := m.certs[l.ACME.Hostname]; c != nil {
			s.Ready, s.NotAfter, s.Serial = true, c.notAfter, c.serial
		}
		out = append(out, s)
	}
	slices.SortFunc(out, func(a, b Status) int {
		return cmp.Or(cmp.Compare(a.Listener.Gateway.String(), b.Listener.Gateway.String()), cmp.Compare(a.Listener.Listener, b.Listener.Listener))
	})
	return out
}

// changed records a change of the challenges and returns its generation.
func (m *Manager) changed() uint64 {
	m.generation++
	return m.generation
}

// waitApplied returns once the gateways were given generation gen (and,
// with Options.Ready, serve it), or ctx is done.
func (m *Manager) waitApplied(ctx context.Context, gen uint64) error {
	for {
		m.mu.Lock()
		applied, ch := m.applied, m.appliedCh
		m.mu.Unlock()
		if applied >= gen {
			break
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("waiting for the gateways to serve the ACME challenge: %w", ctx.Err())
		}
	}
	if m.opts.Ready != nil {
		return m.opts.Ready(ctx)
	}
	return nil
}

// challengesDir is where, in the storage, the challenges being validated
// are: every replica sharing the state serves them, whichever ordered.
const challengesDir = "meshgate-challenges"

// sharedChallenge is a challenge being validated, as stored. Its key is
// a TLS-ALPN-01 certificate's (a throwaway, self-signed; in Consul KV
// encrypted like the rest of the state).
type sharedChallenge struct {
	Type             string `json:"type"`
	Hostname         string `json:"hostname"`
	Token            string `json:"token"`
	KeyAuthorization string `json:"keyAuthorization,omitempty"`
	CertPEM          []byte `json:"certPEM,omitempty"`
	KeyPEM           []byte `json:"keyPEM,omitempty"`
	// Expires is when it is no longer served, should the replica that
	// presented it never clean it up (it stopped meanwhile).
	Expires time.Time `json:"expires"`
}

// challengeLifetime bounds how long a stored challenge is served.
const challengeLifetime = time.Hour

// key names a challenge in the storage and in the Manager's maps.
func (c sharedChallenge) key() string {
	return certmagic.StorageKeys.Safe(c.Type + "_" + c.Hostname + "_" + c.Token)
}

// watcher is a state store that tells of changes (Consul KV).
type watcher interface {
	Watch(ctx context.Context, prefix string, changed func()) error
}

// storeChallenge stores a challenge for the other replicas.
func (m *Manager) storeChallenge(ctx context.Context, c sharedChallenge) error {
	b, err := json.Marshal(c)
	if err != nil {
		return err
	}
	if err := m.storage.Store(ctx, challengesDir+"/"+c.key()+".json", b); err != nil {
		return fmt.Errorf("storing the ACME challenge: %w", err)
	}
	return nil
}

// loadChallenges reads the challenges every replica stored; a change is
// served.
func (m *Manager) loadChallenges(ctx context.Context) {
	keys, err := m.storage.List(ctx, challengesDir, false)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		m.logger.Warn("ACME: reading the challenges of the other replicas", "error", err)
		return
	}
	shared := map[string]sharedChallenge{}
	for _, k := range keys {
		b, err := m.storage.Load(ctx, k)
		if err != nil {
			continue // cleaned up meanwhile
		}
		var c sharedChallenge
		switch {
		case json.Unmarshal(b, &c) != nil:
		case time.Now().After(c.Expires):
			_ = m.storage.Delete(ctx, k) // left by a replica that stopped
		default:
			shared[c.key()] = c
		}
	}
	m.mu.Lock()
	changed := !maps.EqualFunc(shared, m.shared, func(a, b sharedChallenge) bool { return a.key() == b.key() })
	if changed {
		m.shared = shared
		m.changed()
	}
	m.mu.Unlock()
	if changed {
		m.opts.OnChange()
	}
}

// watchChallenges serves the challenges the other replicas sharing the
// state (Consul KV) store, until ctx is done.
func (m *Manager) watchChallenges(ctx context.Context) {
	w, ok := m.opts.Store.(watcher)
	if !ok {
		return // a directory: one control plane
	}
	m.loadChallenges(ctx)
	if err := w.Watch(ctx, storagePrefix+challengesDir+"/", func() { m.loadChallenges(ctx) }); err != nil && ctx.Err() == nil {
		m.logger.Error("ACME: watching the challenges of the other replicas stopped", "error", err)
	}
}
