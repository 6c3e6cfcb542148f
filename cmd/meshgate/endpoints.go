package main

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/meshgate/meshgate/api/xdsnode"
	"github.com/meshgate/meshgate/controlplane"
	"github.com/meshgate/meshgate/dataplane"
)

// proxyAdminTimeout bounds each request to a proxy's admin port, and
// proxyAdminBodyLimit its answer.
const (
	proxyAdminTimeout   = 10 * time.Second
	proxyAdminBodyLimit = 64 << 20
)

// newProxiesEndpointsCmd builds `meshgate proxies endpoints`; a holds the
// admin flags of `meshgate proxies`.
func newProxiesEndpointsCmd(a *adminFlags) *cobra.Command {
	var admin, output string
	cmd := &cobra.Command{
		Use:   "endpoints NAME",
		Short: "Show a proxy's upstream endpoints: health, active check, outlier ejection, weight, requests, connections",
		Long: `Show the upstream endpoints of the proxy NAME, from its admin port (GET /clusters):
for each cluster, each endpoint's health from discovery (Consul or the Service's
endpoints), its active health check state, its outlier ejection (until when, and
how many times), its weight, its requests in flight and its open connections.

The proxy's admin address is the one it reported to the control plane when it
connected (GET /status, with the admin flags of every operator verb), found by
NAME: its node id, its name, or namespace/name (one proxy only: give the node
id when several match). --proxy-admin gives it directly instead (its --admin
address), without asking the control plane; NAME is then checked against the
proxy found there.`,
		Example: `  meshgate proxies endpoints edge
  meshgate proxies endpoints default/orders -o json
  meshgate proxies endpoints orders --proxy-admin 127.0.0.1:15101`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" {
				return &exitError{code: 2, err: fmt.Errorf("--output %q: want json (default: a table)", output)}
			}
			ctx := cmd.Context()
			if admin == "" {
				found, err := proxyAdminAddress(ctx, a, args[0])
				if err != nil {
					return err
				}
				admin = found
			}
			var dump dataplane.ConfigDump
			if err := proxyAdminGet(ctx, admin, "/config_dump", &dump); err != nil {
				return err
			}
			if !proxyIsNamed(dump.Node, args[0]) {
				return fmt.Errorf("the proxy at %s is not %q (its node: %s); give its admin address with --proxy-admin", admin, args[0], dump.Node)
			}
			var clusters dataplane.ClustersDump
			if err := proxyAdminGet(ctx, admin, "/clusters", &clusters); err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if output == "json" {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(clusters)
			}
			return printEndpoints(out, clusters)
		},
	}
	cmd.Flags().StringVar(&admin, "proxy-admin", "", "the proxy's admin address host:port (its --admin); default: the one it reported to the control plane")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (default: a table)")
	return cmd
}

// proxyAdminAddress asks the control plane for the admin address of the
// connected proxy called name (its node id, name, or namespace/name).
func proxyAdminAddress(ctx context.Context, a *adminFlags, name string) (string, error) {
	var st controlplane.Status
	if err := a.call(ctx, "GET", "/status", nil, &st); err != nil {
		return "", fmt.Errorf("finding proxy %q: %w (or give its admin address with --proxy-admin)", name, err)
	}
	var found []string
	var admin string
	for _, p := range st.Proxies {
		if name != p.ID && name != p.Name && name != p.Namespace+"/"+p.Name {
			continue
		}
		found = append(found, p.ID)
		admin = p.AdminAddress
	}
	switch {
	case len(found) == 0:
		return "", fmt.Errorf("no connected proxy is called %q (meshgate proxies lists them)", name)
	case len(found) > 1:
		return "", fmt.Errorf("%d proxies are called %q: give one's node id (%s)", len(found), name, strings.Join(found, ", "))
	case admin == "":
		return "", fmt.Errorf("proxy %s did not report its admin address: give it with --proxy-admin", found[0])
	}
	return scrapeAddress(admin), nil
}

// proxyIsNamed reports whether the node (protojson) is the proxy called
// name: its id, its cluster (the proxy's name), or namespace/name.
func proxyIsNamed(node json.RawMessage, name string) bool {
	var n struct {
		ID       string         `json:"id"`
		Cluster  string         `json:"cluster"`
		Metadata map[string]any `json:"metadata"`
	}
	if err := json.Unmarshal(node, &n); err != nil {
		return false
	}
	if name == n.ID || name == n.Cluster {
		return true
	}
	ns, _ := n.Metadata[xdsnode.KeyNamespace].(string)
	return ns != "" && name == ns+"/"+n.Cluster
}

// proxyAdminGet GETs path from the proxy admin at addr and decodes its JSON.
func proxyAdminGet(ctx context.Context, addr, path string, out any) error {
	ctx, cancel := context.WithTimeout(ctx, proxyAdminTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return fmt.Errorf("proxy admin %s: %w", addr, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("no proxy admin at %s (%w): give the proxy's --admin address with --proxy-admin", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, proxyAdminBodyLimit))
	if err != nil {
		return fmt.Errorf("proxy admin %s%s: %w", addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("proxy admin %s%s: %s: %s", addr, path, resp.Status, strings.TrimSpace(string(body)))
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("proxy admin %s%s: %w", addr, path, err)
	}
	return nil
}

// printEndpoints writes one line per endpoint of every cluster.
func printEndpoints(w io.Writer, dump dataplane.ClustersDump) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLUSTER\tENDPOINT\tHEALTH\tCHECK\tEJECTED\tWEIGHT\tREQUESTS\tCONNECTIONS\tTRAFFIC")
	for _, c := range dump.Clusters {
		for _, e := range c.Endpoints {
			ejected := "-"
			if e.Ejected && e.EjectedUntil != nil {
				ejected = fmt.Sprintf("until %s (%dx)", e.EjectedUntil.Local().Format(time.TimeOnly), e.TimesEjected)
			} else if e.TimesEjected > 0 {
				ejected = fmt.Sprintf("no (%dx)", e.TimesEjected)
			}
			requests := "-"
			if e.ActiveRequests != nil {
				requests = strconv.FormatInt(*e.ActiveRequests, 10)
			}
			traffic := "no"
			if e.Available {
				traffic = "yes"
				if c.Panic {
					traffic = "yes (panic)"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", c.Name, e.Address, e.Health,
				cmp.Or(e.ActiveCheck, "-"), ejected, e.Weight, requests, e.Connections, traffic)
		}
	}
	return tw.Flush()
}
