package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/consul/api"
	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/controlplane/discovery"
	"github.com/meshgate/meshgate/controlplane/kvpolicy"
	"github.com/meshgate/meshgate/policy"
)

// Policy stores `apply`, `get` and `delete` work on.
const (
	policyStoreFile   = "file"
	policyStoreConsul = "consul"
)

// kvCommandTimeout bounds one apply, get or delete against Consul.
const kvCommandTimeout = 30 * time.Second

// policyStoreFlags select the policy store of apply, get and delete.
type policyStoreFlags struct {
	store  string
	consul string
	token  string
	prefix string
}

func (p *policyStoreFlags) register(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringVar(&p.store, "store", policyStoreFile, "where the policy lives: file (the policy files are the store) or consul (Consul KV)")
	f.StringVar(&p.consul, "consul", os.Getenv("CONSUL_HTTP_ADDR"), "Consul agent, host:port or URL (default $CONSUL_HTTP_ADDR, else 127.0.0.1:8500)")
	f.StringVar(&p.token, "consul-token", "", "Consul ACL token with key:write on the prefix (default $CONSUL_HTTP_TOKEN)")
	f.StringVar(&p.prefix, "prefix", kvpolicy.DefaultPrefix, "Consul KV prefix; resources live under <prefix>policy/")
}

// consulPolicyStore opens the KV policy store, or says why it cannot: only
// --store consul has one. Its Apply and Delete validate the policy with the
// services of the same Consul's catalog, read as the control plane reads
// them (warnings, such as skipped service names, go to stderr).
func (p *policyStoreFlags) consulPolicyStore(verb string, stderr io.Writer) (*kvpolicy.Store, string, error) {
	switch p.store {
	case policyStoreConsul:
	case policyStoreFile:
		return nil, "", &exitError{code: 2, err: fmt.Errorf("%s: with --store file the policy files are the store: edit them (the control plane reloads them); use --store consul for policy in Consul KV", verb)}
	default:
		return nil, "", &exitError{code: 2, err: fmt.Errorf("%s: unknown --store %q (want file or consul)", verb, p.store)}
	}
	cfg := api.DefaultConfig()
	if p.consul != "" {
		cfg.Address = p.consul
	}
	if p.token != "" {
		cfg.Token = p.token
	}
	client, err := api.NewClient(cfg)
	if err != nil {
		return nil, "", &exitError{code: 2, err: fmt.Errorf("%s: --consul %s: %w", verb, cfg.Address, err)}
	}
	return kvpolicy.New(client, p.prefix).WithServices(catalogServices(client, stderr)), cfg.Address, nil
}

// catalogServices reads the Consul catalog once (discovery.Snapshot, the
// control plane's own mapping of catalog entries to services) and gives
// the services as the Services the control plane validates them as, so
// that apply and delete validate what the control plane will compile.
func catalogServices(client *api.Client, stderr io.Writer) kvpolicy.ServiceSource {
	return func(ctx context.Context) ([]*policy.Service, error) {
		logger := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
		services, err := discovery.Snapshot(ctx, discovery.ConsulOptions{Client: client, Logger: logger})
		if err != nil {
			return nil, err
		}
		return controlplane.PolicyServices(services), nil
	}
}

// kvError turns a kvpolicy error into the command's error and exit code.
func kvError(verb, addr string, err error) error {
	var list policy.ErrorList
	switch {
	case errors.As(err, &list):
		return &exitError{code: 1, err: fmt.Errorf("%s: %s in the resulting policy, nothing written:\n%w", verb, plural(len(list), "error", "errors"), err)}
	case errors.Is(err, kvpolicy.ErrUnknownKind):
		return &exitError{code: 2, err: fmt.Errorf("%s: %w", verb, err)}
	case errors.Is(err, kvpolicy.ErrConflict), errors.Is(err, kvpolicy.ErrNotFound):
		return &exitError{code: 1, err: fmt.Errorf("%s: %w", verb, err)}
	case errors.Is(err, context.DeadlineExceeded):
		return &exitError{code: 1, err: fmt.Errorf("%s: Consul at %s did not answer within %s: %w", verb, addr, kvCommandTimeout, err)}
	default:
		return &exitError{code: 1, err: fmt.Errorf("%s: Consul at %s: %w", verb, addr, err)}
	}
}

// newApplyCmd builds `meshgate apply`.
func newApplyCmd() *cobra.Command {
	var paths []string
	var store policyStoreFlags
	cmd := &cobra.Command{
		Use:   "apply -f PATH [-f PATH...] --store consul",
		Short: "Validate policy files with the policy in Consul KV and write them in one transaction",
		Long: `Apply reads policy files and directories (every *.yaml and *.yml file of a
directory; "-" is standard input) and, with --store consul, validates them
together with the policy already in Consul KV (a resource with the same kind,
namespace and name replaces the one there) and the services of the Consul
catalog, read once as the control plane reads them (so a route may send
traffic to a service only Consul knows, and a Service resource named like a
catalog service is refused as its duplicate), then writes every new or changed
resource to <prefix>policy/<Kind>/<namespace>/<name> in one KV transaction.
It prints, per resource, whether it was created, configured or unchanged.

Nothing is written when the resulting policy is invalid (every problem is
printed, KV keys named consul:<key>), nor when someone changed the policy in
KV meanwhile ("policy changed since it was read, retry").

With --store file (the default) the policy files are the store: apply only
validates them, like meshgate validate, and says so.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(paths) == 0 {
				return &exitError{code: 2, err: errors.New("apply: give at least one policy file or directory with -f")}
			}
			if store.store == policyStoreFile {
				var files []string
				for _, p := range paths {
					if p == "-" {
						return &exitError{code: 2, err: errors.New("apply: -f - (standard input) needs --store consul")}
					}
					files = append(files, p)
				}
				if err := runValidate(cmd.OutOrStdout(), cmd.ErrOrStderr(), files); err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), "nothing applied: with --store file the policy files are the store; point the control plane's --config at them (or use --store consul)")
				return nil
			}
			s, addr, err := store.consulPolicyStore("apply", cmd.ErrOrStderr())
			if err != nil {
				return err
			}
			files, err := readApplyFiles(cmd.InOrStdin(), paths)
			if err != nil {
				return &exitError{code: 1, err: fmt.Errorf("apply: %w", err)}
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), kvCommandTimeout)
			defer cancel()
			results, err := s.Apply(ctx, files)
			if err != nil {
				return kvError("apply", addr, err)
			}
			for _, r := range results {
				fmt.Fprintln(cmd.OutOrStdout(), r)
			}
			return nil
		},
	}
	cmd.Flags().StringArrayVarP(&paths, "filename", "f", nil, `policy file or directory (repeatable; "-" for standard input)`)
	store.register(cmd)
	return cmd
}

// readApplyFiles reads the files apply was given: a file, every *.yaml and
// *.yml file of a directory (sorted, not recursive), or "-" for stdin.
func readApplyFiles(stdin io.Reader, paths []string) ([]policy.File, error) {
	const maxSize = 16 << 20
	var files []policy.File
	read := func(name string, r io.Reader) error {
		data, err := io.ReadAll(io.LimitReader(r, maxSize+1))
		if err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		if len(data) > maxSize {
			return fmt.Errorf("%s: larger than %d bytes", name, maxSize)
		}
		files = append(files, policy.File{Name: name, Data: data})
		return nil
	}
	for _, p := range paths {
		if p == "-" {
			if err := read("<stdin>", stdin); err != nil {
				return nil, err
			}
			continue
		}
		info, err := os.Stat(p)
		if err != nil {
			return nil, err
		}
		names := []string{p}
		if info.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				return nil, err
			}
			names = names[:0]
			for _, e := range entries {
				ext := strings.ToLower(filepath.Ext(e.Name()))
				if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
					names = append(names, filepath.Join(p, e.Name()))
				}
			}
			slices.Sort(names)
		}
		for _, name := range names {
			f, err := os.Open(name)
			if err != nil {
				return nil, err
			}
			err = read(name, f)
			f.Close()
			if err != nil {
				return nil, err
			}
		}
	}
	return files, nil
}
