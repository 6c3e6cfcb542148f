package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/credentials"

	"github.com/meshgate/meshgate/dataplane/identity"
)

// enrollConcurrency bounds the identities enrolled at once.
const enrollConcurrency = 8

// admin is the control plane's admin API, authenticated with the admin
// token the control plane wrote into its data directory.
type admin struct {
	base  string
	token string
}

func newAdmin(addr, dataDir string) (*admin, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "admin-token"))
	if err != nil {
		return nil, fmt.Errorf("admin token: %w", err)
	}
	return &admin{base: "http://" + addr, token: strings.TrimSpace(string(b))}, nil
}

// do sends an authenticated request and decodes a JSON answer into out.
func (a *admin) do(ctx context.Context, method, path string, in, out any, wantCode int) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("%s %s: %w", method, path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, a.base+path, body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	if resp.StatusCode != wantCode {
		return fmt.Errorf("%s %s: status %d: %s", method, path, resp.StatusCode, bytes.TrimSpace(b))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return nil
}

// createToken creates a join token for a service (or gateway) name.
func (a *admin) createToken(ctx context.Context, name string) (string, error) {
	var resp struct {
		Token string `json:"token"`
	}
	req := map[string]string{"service": name, "namespace": namespace, "ttl": "24h"}
	if err := a.do(ctx, http.MethodPost, "/tokens", req, &resp, http.StatusCreated); err != nil {
		return "", err
	}
	return resp.Token, nil
}

// enroll does for every identity what a proxy does on start: a join token
// from the admin API, then a key and a CSR signed by the CA with that token
// (identity.Manager, the proxy's own code). It returns each identity's xDS
// transport credentials: its certificate, and the control plane verified
// against the token's pin and then the trust bundle.
func enroll(ctx context.Context, logger *slog.Logger, a *admin, xdsAddr string, names []string) (map[string]credentials.TransportCredentials, error) {
	creds := make(map[string]credentials.TransportCredentials, len(names))
	var mu sync.Mutex
	var g errgroup.Group
	g.SetLimit(enrollConcurrency)
	quiet := slog.New(slog.DiscardHandler)
	for _, name := range names {
		g.Go(func() error {
			c, err := enrollOne(ctx, quiet, a, xdsAddr, name)
			if err != nil {
				return fmt.Errorf("enroll %s: %w", name, err)
			}
			mu.Lock()
			defer mu.Unlock()
			creds[name] = c
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	logger.Info("identities enrolled", "count", len(creds))
	return creds, nil
}

func enrollOne(ctx context.Context, logger *slog.Logger, a *admin, xdsAddr, name string) (credentials.TransportCredentials, error) {
	tok, err := a.createToken(ctx, name)
	if err != nil {
		return nil, err
	}
	m, err := identity.NewManager(identity.ManagerOptions{
		Namespace:             namespace,
		Service:               name,
		ControlPlaneAddresses: []string{xdsAddr},
		Token:                 tok,
		Logger:                logger,
	})
	if err != nil {
		return nil, err
	}
	if err := m.Start(ctx); err != nil {
		return nil, err
	}
	return m.XDSCredentials(), nil
}
