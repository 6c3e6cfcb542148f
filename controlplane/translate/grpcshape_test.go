package translate

import (
	"fmt"
	"os"
	"testing"

	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
)

// grpcShapeErrors lists what of res grpc-go's xDS client (v1.85,
// internal/xds/xdsclient/xdsresource: unmarshal_rds.go, unmarshal_eds.go)
// refuses in the resources every node shares: a route match other than
// prefix, path or safe_regex NACKs the whole RouteConfiguration; a
// locality without a Locality NACKs the ClusterLoadAssignment, one without
// a load_balancing_weight is ignored (its endpoints unreachable); two
// localities of one priority with the same Locality, or a priority
// missing below the highest, NACK it.
func grpcShapeErrors(res *Resources) []string {
	var errs []string
	for _, rc := range res.Routes {
		for _, vh := range rc.GetVirtualHosts() {
			for i, r := range vh.GetRoutes() {
				switch r.GetMatch().GetPathSpecifier().(type) {
				case *routev3.RouteMatch_Prefix, *routev3.RouteMatch_Path, *routev3.RouteMatch_SafeRegex:
				default:
					errs = append(errs, fmt.Sprintf("route configuration %q, virtual host %q, route %d: match %v", rc.GetName(), vh.GetName(), i, r.GetMatch()))
				}
			}
		}
	}
	assignments := res.Endpoints
	for _, c := range res.Clusters {
		if c.GetLoadAssignment() != nil {
			assignments = append(assignments, c.GetLoadAssignment())
		}
	}
	for _, cla := range assignments {
		errs = append(errs, localityShapeErrors(cla)...)
	}
	return errs
}

func localityShapeErrors(cla *endpointv3.ClusterLoadAssignment) []string {
	var errs []string
	seen := map[string]bool{}
	maxPriority := -1
	priorities := map[uint32]bool{}
	for i, l := range cla.GetEndpoints() {
		if l.GetLocality() == nil {
			errs = append(errs, fmt.Sprintf("load assignment %q, endpoints[%d]: no locality", cla.GetClusterName(), i))
		}
		if l.GetLoadBalancingWeight().GetValue() == 0 {
			errs = append(errs, fmt.Sprintf("load assignment %q, endpoints[%d]: no load_balancing_weight", cla.GetClusterName(), i))
		}
		key := fmt.Sprintf("%d/%s/%s/%s", l.GetPriority(), l.GetLocality().GetRegion(), l.GetLocality().GetZone(), l.GetLocality().GetSubZone())
		if seen[key] {
			errs = append(errs, fmt.Sprintf("load assignment %q, endpoints[%d]: locality %v repeated at priority %d", cla.GetClusterName(), i, l.GetLocality(), l.GetPriority()))
		}
		seen[key] = true
		priorities[l.GetPriority()] = true
		maxPriority = max(maxPriority, int(l.GetPriority()))
	}
	for p := range maxPriority {
		if !priorities[uint32(p)] {
			errs = append(errs, fmt.Sprintf("load assignment %q: priority %d missing", cla.GetClusterName(), p))
		}
	}
	return errs
}

// TestGoldenResourcesHaveGRPCShapes checks every golden output against the
// rules of grpc-go's xDS client: the route configurations, clusters and
// load assignments every node receives are the ones a proxyless gRPC
// client receives too, so they must have shapes both accept (the data
// plane's side is TestContract).
func TestGoldenResourcesHaveGRPCShapes(t *testing.T) {
	t.Parallel()
	for _, c := range goldenCases(t) {
		data, err := os.ReadFile(c.out)
		if err != nil {
			t.Fatalf("%v (go test -update writes it)", err)
		}
		nodes, err := unmarshalGolden(data)
		if err != nil {
			t.Fatalf("%s: %v", c.out, err)
		}
		for _, n := range nodes {
			for _, e := range grpcShapeErrors(n.Res) {
				t.Errorf("%s, node %s: %s", c.out, n.Node.ID, e)
			}
		}
	}
}
