// Package ca is meshgate's certificate authority: it keeps the roots the mesh
// trusts (the trust bundle) and the one that signs, issues short-lived X.509
// SVIDs (one SPIFFE ID as the only URI SAN, ECDSA P-256) to proxies that
// send a CSR, rotates the root in three persisted steps (begin, switch,
// finish), issues the control plane's own serving certificate, and answers
// the meshgate.ca.v1.CertificateAuthority gRPC service.
//
// A root is generated on first start and persisted through a state.Store, or
// supplied by the operator as PEM files (then rotation is the operator's).
package ca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/token"
	"github.com/meshgate/meshgate/controlplane/state"
)

// Lifetimes and clock-skew allowance.
const (
	RootValidity = 10 * 365 * 24 * time.Hour
	ClockSkew    = time.Minute
	MinTTL       = time.Minute
)

// Phase is where the CA is in a root rotation.
type Phase string

// Rotation phases.
const (
	// PhaseStable: one root, which signs.
	PhaseStable Phase = "stable"
	// PhasePrepared: a new root is in the bundle; the old one still signs.
	PhasePrepared Phase = "prepared"
	// PhaseSwitched: the new root signs; the old one is still trusted.
	PhaseSwitched Phase = "switched"
)

// Step is a root rotation step.
type Step string

// Rotation steps.
const (
	StepBegin  Step = "begin"
	StepSwitch Step = "switch"
	StepFinish Step = "finish"
)

// Errors of Rotate, wrapped.
var (
	ErrRotationOrder  = errors.New("rotation step out of order")
	ErrFinishTooEarly = errors.New("certificates signed by the old root may still be valid")
	ErrOperatorRoot   = errors.New("the root is supplied by the operator (--ca-cert/--ca-key): rotate by replacing those files")
)

// State keys.
const (
	stateKey   = "ca/state.json"
	rootPrefix = "ca/roots/"
)

// Options configure a CA.
type Options struct {
	// Store persists generated roots and the rotation state. Required
	// unless CertFile and KeyFile are set.
	Store state.Store
	// CertFile and KeyFile, when set, supply the signing certificate and
	// its key as PEM. CertFile may hold more certificates after the first:
	// they are trusted too.
	CertFile, KeyFile string
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// OnChange, when set, is called after the trust bundle or the signer
	// changed: by a rotation step here, or by another replica (seen by
	// Reload). The control plane pushes the new bundle to its proxies.
	OnChange func(Status)
}

// root is one CA certificate, with its key when this CA may sign with it.
type root struct {
	id      string // first 16 hex digits of the SHA-256 of the DER
	cert    *x509.Certificate
	certPEM []byte
	key     crypto.Signer
}

// view is an immutable picture of the CA's state.
type view struct {
	roots      []*root // oldest first
	signer     *root
	phase      Phase
	switchedAt time.Time
	pool       *x509.CertPool
	bundlePEM  []byte
}

// persisted is the JSON of stateKey.
type persisted struct {
	Roots      []string  `json:"roots"`
	Signer     string    `json:"signer"`
	Phase      Phase     `json:"phase"`
	SwitchedAt time.Time `json:"switchedAt,omitzero"`
}

// CA is the certificate authority. It is safe for concurrent use; issuing
// takes no lock.
type CA struct {
	store    state.Store
	now      func() time.Time
	logger   *slog.Logger
	operator bool
	onChange func(Status)

	mu  sync.Mutex // serialises rotation and reload
	cur atomic.Pointer[view]
}

// New loads the CA's state, generating and persisting a root on first start,
// or loads the operator's root from opts.CertFile and opts.KeyFile.
func New(ctx context.Context, opts Options) (*CA, error) {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	c := &CA{store: opts.Store, now: opts.Now, logger: opts.Logger, onChange: opts.OnChange}
	switch {
	case opts.CertFile != "" || opts.KeyFile != "":
		if opts.CertFile == "" || opts.KeyFile == "" {
			return nil, errors.New("ca: --ca-cert and --ca-key go together")
		}
		v, err := loadOperatorRoot(opts.CertFile, opts.KeyFile, c.now())
		if err != nil {
			return nil, err
		}
		c.operator = true
		c.cur.Store(v)
	case opts.Store == nil:
		return nil, errors.New("ca: no state store")
	default:
		v, err := c.load(ctx)
		if err != nil {
			return nil, err
		}
		c.cur.Store(v)
	}
	return c, nil
}

// lockName is the state.Locker lock that serialises the CA's writes across
// control-plane replicas sharing one store.
const lockName = "ca"

// withLock runs fn holding the CA's local mutex and, when the store is
// shared (a state.Locker), the CA lock of every replica; fn writes with the
// context it is given, which ends should the shared lock be lost.
func (c *CA) withLock(ctx context.Context, fn func(ctx context.Context) error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	locker, ok := c.store.(state.Locker)
	if !ok {
		return fn(ctx)
	}
	held, release, err := locker.Lock(ctx, lockName)
	if err != nil {
		return fmt.Errorf("ca: take the CA lock: %w", err)
	}
	defer release()
	return fn(held)
}

// load reads the persisted state, or creates it: under the lock, after
// reading again, so that of several replicas starting at once on one shared
// store only one generates the root and the others load it.
func (c *CA) load(ctx context.Context) (*view, error) {
	v, err := c.read(ctx, nil)
	if v != nil || err != nil {
		return v, err
	}
	err = c.withLock(ctx, func(ctx context.Context) error {
		if v, err = c.read(ctx, nil); v != nil || err != nil {
			return err
		}
		r, err := c.generateRoot(ctx)
		if err != nil {
			return err
		}
		v = newView([]*root{r}, r, PhaseStable, time.Time{})
		if err := c.save(ctx, v.persisted()); err != nil {
			return err
		}
		c.logger.Info("generated the mesh root CA", "root", r.id, "notAfter", r.cert.NotAfter)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return v, nil
}

// read loads the persisted state: nil, nil when there is none yet. Roots of
// known (the current view, may be nil) are reused rather than read again.
func (c *CA) read(ctx context.Context, known *view) (*view, error) {
	b, err := c.store.Get(ctx, stateKey)
	if errors.Is(err, state.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("ca: load state: %w", err)
	}
	var p persisted
	if err := json.Unmarshal(b, &p); err != nil {
		return nil, fmt.Errorf("ca: decode %s: %w", stateKey, err)
	}
	switch p.Phase {
	case PhaseStable, PhasePrepared, PhaseSwitched:
	default:
		return nil, fmt.Errorf("ca: %s: unknown phase %q", stateKey, p.Phase)
	}
	roots := make([]*root, 0, len(p.Roots))
	var signer *root
	for _, id := range p.Roots {
		r := known.root(id)
		if r == nil {
			if r, err = c.loadRoot(ctx, id); err != nil {
				return nil, err
			}
		}
		roots = append(roots, r)
		if id == p.Signer {
			signer = r
		}
	}
	if signer == nil {
		return nil, fmt.Errorf("ca: %s: signer %q is not one of the roots", stateKey, p.Signer)
	}
	return newView(roots, signer, p.Phase, p.SwitchedAt), nil
}

// root is the root of v with id, or nil (also for a nil view).
func (v *view) root(id string) *root {
	if v == nil {
		return nil
	}
	for _, r := range v.roots {
		if r.id == id && r.key != nil {
			return r
		}
	}
	return nil
}

// persisted is what the store keeps of v.
func (v *view) persisted() persisted {
	p := persisted{Signer: v.signer.id, Phase: v.phase, SwitchedAt: v.switchedAt}
	for _, r := range v.roots {
		p.Roots = append(p.Roots, r.id)
	}
	return p
}

// same reports whether v and w describe the same CA state.
func (v *view) same(w *view) bool {
	a, b := v.persisted(), w.persisted()
	return a.Signer == b.Signer && a.Phase == b.Phase && a.SwitchedAt.Equal(b.SwitchedAt) && slices.Equal(a.Roots, b.Roots)
}

// Reload reads the CA state from the store again and, when another replica
// changed it (a rotation step), serves the new trust bundle and signer from
// now on and calls Options.OnChange. It reports whether anything changed.
// On an error the current state keeps serving. With an operator root it
// does nothing.
func (c *CA) Reload(ctx context.Context) (bool, error) {
	if c.operator {
		return false, nil
	}
	c.mu.Lock()
	cur := c.cur.Load()
	next, err := c.read(ctx, cur)
	if err == nil && next == nil {
		err = fmt.Errorf("ca: %s is gone from the state store", stateKey)
	}
	if err != nil {
		c.mu.Unlock()
		return false, err
	}
	changed := !next.same(cur)
	if changed {
		c.cur.Store(next)
	}
	c.mu.Unlock()
	if changed {
		c.logger.Info("CA state changed in the store: serving it", "phase", next.phase, "signer", next.signer.id, "roots", len(next.roots))
		c.notify()
	}
	return changed, nil
}

// notify calls Options.OnChange.
func (c *CA) notify() {
	if c.onChange != nil {
		c.onChange(c.Status())
	}
}

// storeWatcher is implemented by stores that report writes (state.Consul).
type storeWatcher interface {
	Watch(ctx context.Context, prefix string, changed func()) error
}

// Run keeps the CA in step with the store until ctx is done: it reloads
// every interval and, when the store reports writes (Consul), as soon as
// the CA's keys change. A control plane sharing its store with other
// replicas runs it; with a store of its own it is not needed.
func (c *CA) Run(ctx context.Context, interval time.Duration) {
	if c.operator {
		return
	}
	reload := func() {
		if _, err := c.Reload(ctx); err != nil && ctx.Err() == nil {
			c.logger.Warn("reload the CA state", "error", err)
		}
	}
	kick := make(chan struct{}, 1)
	if w, ok := c.store.(storeWatcher); ok {
		go func() {
			_ = w.Watch(ctx, "ca/", func() {
				select {
				case kick <- struct{}{}:
				default:
				}
			})
		}()
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		case <-kick:
		}
		reload()
	}
}

func (c *CA) loadRoot(ctx context.Context, id string) (*root, error) {
	certPEM, err := c.store.Get(ctx, rootPrefix+id+".pem")
	if err != nil {
		return nil, fmt.Errorf("ca: load root %s: %w", id, err)
	}
	keyPEM, err := c.store.Get(ctx, rootPrefix+id+".key")
	if err != nil {
		return nil, fmt.Errorf("ca: load root %s: %w", id, err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: load root %s: %w", id, err)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("ca: load root %s: key cannot sign", id)
	}
	return newRoot(pair.Leaf, key), nil
}

// generateRoot creates an ECDSA P-256 self-signed root and persists it.
func (c *CA) generateRoot(ctx context.Context) (*root, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ca: generate root key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := c.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"meshgate"}, CommonName: "meshgate root CA " + now.UTC().Format("2006-01-02T15:04:05Z")},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(RootValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("ca: create root: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse root: %w", err)
	}
	r := newRoot(cert, key)
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("ca: encode root key: %w", err)
	}
	if err := c.store.Put(ctx, rootPrefix+r.id+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})); err != nil {
		return nil, fmt.Errorf("ca: save root: %w", err)
	}
	if err := c.store.Put(ctx, rootPrefix+r.id+".pem", r.certPEM); err != nil {
		return nil, fmt.Errorf("ca: save root: %w", err)
	}
	return r, nil
}

func (c *CA) save(ctx context.Context, p persisted) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return fmt.Errorf("ca: encode state: %w", err)
	}
	if err := c.store.Put(ctx, stateKey, b); err != nil {
		return fmt.Errorf("ca: save state: %w", err)
	}
	return nil
}

// loadOperatorRoot reads the operator's signing certificate (the first in
// certFile; the others are trusted too) and its key.
func loadOperatorRoot(certFile, keyFile string, now time.Time) (*view, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("ca: read --ca-cert: %w", err)
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, fmt.Errorf("ca: read --ca-key: %w", err)
	}
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("ca: --ca-cert/--ca-key: %w", err)
	}
	key, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("ca: --ca-key: key cannot sign")
	}
	signer := newRoot(pair.Leaf, key)
	if !signer.cert.IsCA || signer.cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, fmt.Errorf("ca: --ca-cert %s: the first certificate is not a CA that may sign certificates", certFile)
	}
	if now.After(signer.cert.NotAfter) {
		return nil, fmt.Errorf("ca: --ca-cert %s: expired at %s", certFile, signer.cert.NotAfter.Format(time.RFC3339))
	}
	roots := []*root{signer}
	for _, der := range pair.Certificate[1:] {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("ca: --ca-cert %s: %w", certFile, err)
		}
		roots = append(roots, newRoot(cert, nil))
	}
	return newView(roots, signer, PhaseStable, time.Time{}), nil
}

func newRoot(cert *x509.Certificate, key crypto.Signer) *root {
	return &root{
		id:      token.PinOf(cert.Raw)[:16],
		cert:    cert,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		key:     key,
	}
}

func newView(roots []*root, signer *root, phase Phase, switchedAt time.Time) *view {
	v := &view{roots: roots, signer: signer, phase: phase, switchedAt: switchedAt, pool: x509.NewCertPool()}
	var bundle bytes.Buffer
	for _, r := range roots {
		v.pool.AddCert(r.cert)
		bundle.Write(r.certPEM)
	}
	v.bundlePEM = bundle.Bytes()
	return v
}

// TrustBundlePEM is every root the mesh trusts, PEM, oldest first.
func (c *CA) TrustBundlePEM() []byte { return slices.Clone(c.cur.Load().bundlePEM) }

// Pool is the trust bundle as a certificate pool. Do not modify it.
func (c *CA) Pool() *x509.CertPool { return c.cur.Load().pool }

// SignerDER is the DER of the root that signs now: the one join tokens pin.
func (c *CA) SignerDER() []byte { return c.cur.Load().signer.cert.Raw }

// Issued is a certificate the CA issued.
type Issued struct {
	Leaf *x509.Certificate
	// ChainDER is the leaf, then the signer when the signer is not a
	// self-signed root.
	ChainDER [][]byte
	ChainPEM []byte
	// BundlePEM is the trust bundle at the time of issue.
	BundlePEM []byte
}

// IssueSVID signs an X.509 SVID for id and pub, valid for ttl (capped by the
// signer's expiry), without a lineage.
func (c *CA) IssueSVID(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration) (*Issued, error) {
	return c.issue(pub, id, ttl, nil, nil, pkix.Name{})
}

// IssueEnrolled signs an X.509 SVID for id and pub, valid for ttl (capped by
// the signer's expiry), that carries the proxy's lineage e.
func (c *CA) IssueEnrolled(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration, e Enrolment) (*Issued, error) {
	return c.issue(pub, id, ttl, nil, nil, e.subject())
}

// issue signs a leaf certificate: id as the only URI SAN, plus ips and dns,
// with subject.
func (c *CA) issue(pub crypto.PublicKey, id spiffeid.ID, ttl time.Duration, ips []net.IP, dns []string, subject pkix.Name) (*Issued, error) {
	if ttl < MinTTL {
		return nil, fmt.Errorf("ca: certificate ttl %s is below the minimum %s", ttl, MinTTL)
	}
	v := c.cur.Load()
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	now := c.now()
	notAfter := now.Add(ttl)
	if notAfter.After(v.signer.cert.NotAfter) {
		notAfter = v.signer.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, fmt.Errorf("ca: the signing root expired at %s", v.signer.cert.NotAfter.Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               subject,
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              notAfter,
		URIs:                  []*url.URL{id.URL()},
		IPAddresses:           ips,
		DNSNames:              dns,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, v.signer.cert, pub, v.signer.key)
	if err != nil {
		return nil, fmt.Errorf("ca: sign certificate for %s: %w", id, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("ca: parse issued certificate: %w", err)
	}
	out := &Issued{Leaf: leaf, ChainDER: [][]byte{der}, BundlePEM: v.bundlePEM}
	out.ChainPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if !bytes.Equal(v.signer.cert.RawIssuer, v.signer.cert.RawSubject) {
		out.ChainDER = append(out.ChainDER, v.signer.cert.Raw)
		out.ChainPEM = append(out.ChainPEM, v.signer.certPEM...)
	}
	return out, nil
}

// randomSerial is a random positive 128-bit serial number.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("ca: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// VerifyLeaf checks that leaf (with any intermediates) chains to the current
// trust bundle for usage, and returns its SPIFFE spiffeid.ID, its only URI SAN.
func (c *CA) VerifyLeaf(leaf *x509.Certificate, intermediates []*x509.Certificate, usage x509.ExtKeyUsage) (spiffeid.ID, error) {
	opts := x509.VerifyOptions{
		Roots:       c.Pool(),
		CurrentTime: c.now(),
		KeyUsages:   []x509.ExtKeyUsage{usage},
	}
	if len(intermediates) > 0 {
		opts.Intermediates = x509.NewCertPool()
		for _, ic := range intermediates {
			opts.Intermediates.AddCert(ic)
		}
	}
	if _, err := leaf.Verify(opts); err != nil {
		return spiffeid.ID{}, fmt.Errorf("certificate does not verify under the mesh trust bundle: %w", err)
	}
	return spiffeid.FromCertificate(leaf)
}
