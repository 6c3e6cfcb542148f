package discovery

import (
	"context"
	"fmt"
	"slices"

	"github.com/hashicorp/consul/api"
	"golang.org/x/sync/errgroup"

	"github.com/meshgate/meshgate/controlplane/model"
)

// Snapshot reads the catalog once and returns the services a synced watch
// with the same options would publish: the same names skipped (Consul
// itself, names that are not DNS labels: logged at warning level), each
// service mapped by ServiceFromEntries from its /v1/health/service answer,
// gateway-only services left out, sorted by namespace and name. It is for
// one-shot readers that must see what the control plane sees, such as
// `meshgate apply --store consul` validating policy with the catalog.
//
// It sends one /v1/catalog/services request, then one read per service, at
// most opts.FetchConcurrency at once; the first failure (or ctx ending)
// stops it with an error. Bound it with ctx. When Consul filtered the
// catalog by ACLs (the token cannot read every service) a warning is
// logged: the services it cannot read are missing from the result.
func Snapshot(ctx context.Context, opts ConsulOptions) ([]*model.DiscoveredService, error) {
	c, err := NewConsul(opts)
	if err != nil {
		return nil, err
	}
	var names map[string][]string
	var meta *api.QueryMeta
	if err := c.request(ctx, func(q *api.QueryOptions) error {
		var err error
		names, meta, err = c.opts.Client.Catalog().Services(q)
		return err
	}); err != nil {
		return nil, fmt.Errorf("consul catalog: list services: %w", err)
	}
	if meta != nil && meta.ResultsFilteredByACLs {
		c.logger.Warn("consul catalog filtered by ACLs: the token cannot read every service; those it cannot read are missing",
			"need", `service_prefix "" { policy = "read" }, node_prefix "" { policy = "read" }`)
	}
	var usable []string
	for name := range names {
		if c.usableName(name) {
			usable = append(usable, name)
		}
	}
	slices.Sort(usable)

	read := make([]*model.DiscoveredService, len(usable))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(c.opts.FetchConcurrency)
	for i, name := range usable {
		if gctx.Err() != nil {
			break // a read failed: the snapshot fails
		}
		g.Go(func() error {
			var entries []*api.ServiceEntry
			err := c.request(gctx, func(q *api.QueryOptions) error {
				var err error
				entries, _, err = c.opts.Client.Health().Service(name, "", false, q)
				return err
			})
			if err != nil {
				return fmt.Errorf("consul catalog: read service %s: %w", name, err)
			}
			read[i] = ServiceFromEntries(name, entries, c.opts.IncludeWarning)
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("consul catalog: %w", err)
	}
	out := slices.DeleteFunc(read, func(s *model.DiscoveredService) bool { return s == nil })
	slices.SortFunc(out, compareServices)
	return out, nil
}
