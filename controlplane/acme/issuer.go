package acme

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/caddyserver/certmagic"
	"github.com/mholt/acmez/v3"
	"github.com/mholt/acmez/v3/acme"

	"github.com/meshgate/meshgate/controlplane/model"
)

// issuer is a certmagic.Issuer that orders certificates from an ACME CA
// with acmez, its challenges answered by the gateways (solver): certmagic
// decides when to obtain and renew, stores and locks; issuer only talks
// ACME. Its account key is kept in the storage, so every replica (and
// every restart) uses the same account.
type issuer struct {
	spec    model.ACMEIssuer
	storage certmagic.Storage
	solver  acmez.Solver

	mu      sync.Mutex
	client  *acmez.Client
	account acme.Account
}

var _ certmagic.Issuer = (*issuer)(nil)

// IssuerKey implements certmagic.Issuer: the directory's host and path,
// as certmagic's own ACME issuer names its storage.
func (i *issuer) IssuerKey() string {
	u, err := url.Parse(i.spec.Server)
	if err != nil {
		return certmagic.StorageKeys.Safe(i.spec.Server)
	}
	return certmagic.StorageKeys.Safe(u.Host + "-" + strings.ReplaceAll(strings.Trim(u.Path, "/"), "/", "-"))
}

// Issue implements certmagic.Issuer: one ACME order for the request's
// names.
func (i *issuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	client, account, err := i.connect(ctx)
	if err != nil {
		return nil, err
	}
	params, err := acmez.OrderParametersFromCSR(account, csr)
	if err != nil {
		return nil, fmt.Errorf("acme order: %w", err)
	}
	certs, err := client.ObtainCertificate(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("acme order at %s: %w", i.spec.Server, err)
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("acme order at %s: no certificate", i.spec.Server)
	}
	return &certmagic.IssuedCertificate{Certificate: certs[0].ChainPEM}, nil
}

// connect returns the ACME client and the account (registered with the
// CA at the first call, with the key from the storage or a new one).
func (i *issuer) connect(ctx context.Context) (*acmez.Client, acme.Account, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.client != nil {
		return i.client, i.account, nil
	}
	httpClient, err := i.httpClient()
	if err != nil {
		return nil, acme.Account{}, err
	}
	solvers := map[string]acmez.Solver{}
	for _, c := range i.spec.Challenges {
		solvers[c] = i.solver
	}
	client := &acmez.Client{Client: &acme.Client{Directory: i.spec.Server, HTTPClient: httpClient, UserAgent: "meshgate"}, ChallengeSolvers: solvers}
	key, err := i.accountKey(ctx)
	if err != nil {
		return nil, acme.Account{}, err
	}
	account := acme.Account{TermsOfServiceAgreed: true, PrivateKey: key}
	if i.spec.Email != "" {
		account.Contact = []string{"mailto:" + i.spec.Email}
	}
	// A key already registered gets its account back (RFC 8555 7.3.1).
	account, err = client.NewAccount(ctx, account)
	if err != nil {
		return nil, acme.Account{}, fmt.Errorf("acme account at %s: %w", i.spec.Server, err)
	}
	i.client, i.account = client, account
	return client, account, nil
}

// accountKeyName is the storage key of the issuer's account key.
func (i *issuer) accountKeyName() string {
	return "accounts/" + i.IssuerKey() + "/" + certmagic.StorageKeys.Safe(i.spec.Email+"@"+i.spec.Namespace+"-"+i.spec.Name) + ".key"
}

// accountKey loads the account's key from the storage, or makes and
// stores one.
func (i *issuer) accountKey(ctx context.Context) (crypto.Signer, error) {
	name := i.accountKeyName()
	pemBytes, err := i.storage.Load(ctx, name)
	if err == nil {
		k, err := certmagic.PEMDecodePrivateKey(pemBytes)
		if err != nil {
			return nil, fmt.Errorf("acme account key %s: %w", name, err)
		}
		return k, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("acme account key: %w", err)
	}
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pemBytes, err = certmagic.PEMEncodePrivateKey(k)
	if err != nil {
		return nil, err
	}
	if err := i.storage.Store(ctx, name, pemBytes); err != nil {
		return nil, fmt.Errorf("acme account key: %w", err)
	}
	return k, nil
}

// httpClient is the client of the ACME directory: the issuer's CA bundle
// (else the system's roots), timeouts.
func (i *issuer) httpClient() (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	if i.spec.CAFile != "" {
		data, err := os.ReadFile(i.spec.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ACMEIssuer %s: caFile: %w", i.spec.NamespacedName, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("ACMEIssuer %s: caFile %s holds no PEM certificate", i.spec.NamespacedName, i.spec.CAFile)
		}
		tr.TLSClientConfig.RootCAs = pool
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}
