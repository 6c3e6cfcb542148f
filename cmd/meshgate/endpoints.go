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
	"github.com/meshgate/meshgate/dataplane"
)

// proxyAdminTimeout bounds each request to a proxy's admin port, and
// proxyAdminBodyLimit its answer.
const (
	proxyAdminTimeout   = 10 * time.Second
	proxyAdminBodyLimit = 64 << 20
)

func newProxiesEndpointsCmd() *cobra.Command {
	var admin, output string
	cmd := &cobra.Command{
		Use:   "endpoints NAME",
		Short: "Show a proxy's upstream endpoints: health, active check, outlier ejection, weight, requests, connections",
		Long: `Show the upstream endpoints of the proxy NAME, from its admin port (GET /clusters):
for each cluster, each endpoint's health from discovery (Consul or the Service's
endpoints), its active health check state, its outlier ejection (until when, and
how many times), its weight, its requests in flight and its open connections.

A proxy's admin port is its --admin address (a gateway's defaults to
` + defaultGatewayAdminAddress + `, a sidecar's to ` + defaultSidecarAdminAddress + `); the
control plane does not know it, so give it with --proxy-admin. NAME is checked
against the proxy found there: its node id, its name, or namespace/name.`,
		Example: `  meshgate proxies endpoints edge
  meshgate proxies endpoints orders --proxy-admin 127.0.0.1:15101 -o json`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if output != "" && output != "json" {
				return &exitError{code: 2, err: fmt.Errorf("--output %q: want json (default: a table)", output)}
			}
			ctx := cmd.Context()
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
	cmd.Flags().StringVar(&admin, "proxy-admin", defaultGatewayAdminAddress, "the proxy's admin address host:port (its --admin)")
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json (default: a table)")
	return cmd
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
