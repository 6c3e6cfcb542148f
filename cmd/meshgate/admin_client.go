package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane"
)

// adminFlags locate and authenticate to a control plane's admin API; every
// operator verb takes them.
type adminFlags struct {
	address string
	token   string
	dataDir string
}

func (a *adminFlags) register(cmd *cobra.Command) {
	def := os.Getenv("MESHGATE_ADMIN")
	if def == "" {
		def = controlplane.DefaultAdminAddress
	}
	f := cmd.PersistentFlags()
	f.StringVar(&a.address, "admin", def, "control plane admin API address host:port (env MESHGATE_ADMIN)")
	f.StringVar(&a.token, "admin-token", "", "admin API token (env MESHGATE_ADMIN_TOKEN; default: read <data-dir>/admin-token)")
	f.StringVar(&a.dataDir, "data-dir", "", "control plane data directory to read the admin token from (default "+controlplane.DefaultDataDir()+")")
}

// bearer finds the admin token: --admin-token, $MESHGATE_ADMIN_TOKEN, then
// the file in the data directory. Empty when none is found (a dev control
// plane needs none).
func (a *adminFlags) bearer() (string, error) {
	if a.token != "" {
		return a.token, nil
	}
	if t := os.Getenv("MESHGATE_ADMIN_TOKEN"); t != "" {
		return strings.TrimSpace(t), nil
	}
	dir := a.dataDir
	explicit := dir != ""
	if !explicit {
		dir = controlplane.DefaultDataDir()
	}
	b, err := os.ReadFile(filepath.Join(dir, controlplane.AdminTokenFile))
	if err != nil {
		if explicit {
			return "", fmt.Errorf("read the admin token: %w", err)
		}
		return "", nil
	}
	return strings.TrimSpace(string(b)), nil
}

// call sends a request to the admin API and decodes a JSON answer into out
// (when non-nil). Non-2xx answers become errors carrying the server's
// message.
func (a *adminFlags) call(ctx context.Context, method, path string, in, out any) error {
	tok, err := a.bearer()
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+a.address+path, body)
	if err != nil {
		return fmt.Errorf("admin API %s: %w", a.address, err)
	}
	if tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return fmt.Errorf("no control plane admin API at %s (connection refused): is the control plane running? set --admin or MESHGATE_ADMIN", a.address)
		}
		return fmt.Errorf("admin API %s: %w", a.address, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("admin API %s: %w", a.address, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		return fmt.Errorf("admin API %s refused the admin token (401): pass --admin-token, set MESHGATE_ADMIN_TOKEN, or --data-dir of the control plane", a.address)
	}
	if resp.StatusCode/100 != 2 {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) == nil && e.Error != "" {
			return fmt.Errorf("%s %s: %s", method, path, e.Error)
		}
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(raw)))
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("%s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// formatTime formats a time for tables, or "-".
func formatTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
