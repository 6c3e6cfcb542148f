package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/dataplane"
)

// newCacheCmd builds `meshgate cache`: operations on the gateways'
// response caches.
func newCacheCmd() *cobra.Command {
	a := &adminFlags{}
	cmd := &cobra.Command{
		Use:   "cache",
		Short: "Operate the response caches of gateways (TrafficPolicy cache)",
	}
	a.register(cmd)
	cmd.AddCommand(newCachePurgeCmd(a))
	return cmd
}

// newCachePurgeCmd builds `meshgate cache purge`.
func newCachePurgeCmd(a *adminFlags) *cobra.Command {
	var gateway, prefix, admin string
	cmd := &cobra.Command{
		Use:   "purge --gateway NAME [--prefix /path]",
		Short: "Remove stored responses from a gateway's response cache",
		Long: `Remove the responses a gateway stored (TrafficPolicy cache) whose request
path starts with --prefix (default: every one), from every listener of the
gateway NAME, through its admin port (POST /cache/purge, accepted from loopback
clients only).

The gateway's admin address is found as meshgate proxies endpoints finds it:
the one it reported to the control plane (GET /status), by its node id, name or
namespace/name; --proxy-admin gives it directly instead. Each replica of a
gateway has its own cache: purge each (by node id).`,
		Example: `  meshgate cache purge --gateway edge
  meshgate cache purge --gateway default/edge --prefix /catalog/
  meshgate cache purge --gateway edge --proxy-admin 127.0.0.1:15000`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if gateway == "" {
				return &exitError{code: 2, err: fmt.Errorf("--gateway is required")}
			}
			if prefix != "" && !strings.HasPrefix(prefix, "/") {
				return &exitError{code: 2, err: fmt.Errorf("--prefix %q: want a path starting with /", prefix)}
			}
			ctx := cmd.Context()
			if admin == "" {
				found, err := proxyAdminAddress(ctx, a, gateway)
				if err != nil {
					return err
				}
				admin = found
			}
			var dump dataplane.ConfigDump
			if err := proxyAdminGet(ctx, admin, "/config_dump", &dump); err != nil {
				return err
			}
			if !proxyIsNamed(dump.Node, gateway) {
				return fmt.Errorf("the proxy at %s is not %q (its node: %s); give its admin address with --proxy-admin", admin, gateway, dump.Node)
			}
			out, err := proxyCachePurge(ctx, admin, prefix)
			if err != nil {
				return err
			}
			what := "every path"
			if prefix != "" {
				what = "paths under " + prefix
			}
			fmt.Fprintf(cmd.OutOrStdout(), "purged %d stored responses (%s) from %d caches of %s\n", out.Purged, what, out.Caches, gateway)
			return nil
		},
	}
	cmd.Flags().StringVar(&gateway, "gateway", "", "the gateway: its node id, name or namespace/name (required)")
	cmd.Flags().StringVar(&prefix, "prefix", "", "purge only the responses to paths starting with this (default: all)")
	cmd.Flags().StringVar(&admin, "proxy-admin", "", "the gateway's admin address host:port (its --admin); default: the one it reported to the control plane")
	return cmd
}

// proxyCachePurge asks the proxy admin at addr to purge its caches.
func proxyCachePurge(ctx context.Context, addr, prefix string) (dataplane.CachePurge, error) {
	var out dataplane.CachePurge
	ctx, cancel := context.WithTimeout(ctx, proxyAdminTimeout)
	defer cancel()
	path := "/cache/purge"
	if prefix != "" {
		path += "?prefix=" + url.QueryEscape(prefix)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, nil)
	if err != nil {
		return out, fmt.Errorf("proxy admin %s: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out, fmt.Errorf("no proxy admin at %s (%w): give the gateway's --admin address with --proxy-admin", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, proxyAdminBodyLimit))
	if err != nil {
		return out, fmt.Errorf("proxy admin %s%s: %w", addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return out, fmt.Errorf("proxy admin %s%s: %s: %s", addr, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("proxy admin %s%s: %w", addr, path, err)
	}
	return out, nil
}
