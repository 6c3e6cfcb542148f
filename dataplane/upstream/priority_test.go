package upstream

import (
	"slices"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

func TestPriorityLoads(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		healthy, total []int
		want           []int
	}{
		{"all healthy", []int{2, 3}, []int{2, 3}, []int{100, 0}},
		{"over 1/1.4 healthy", []int{3, 3}, []int{4, 3}, []int{100, 0}}, // 3/4*140 = 105
		{"half healthy", []int{1, 3}, []int{2, 3}, []int{70, 30}},
		{"one of three", []int{1, 3}, []int{3, 3}, []int{46, 54}},
		{"none healthy", []int{0, 3}, []int{2, 3}, []int{0, 100}},
		{"level 0 empty", []int{0, 3}, []int{0, 3}, []int{0, 100}},
		{"nothing healthy anywhere", []int{0, 0}, []int{2, 3}, []int{100, 0}},
		{"degraded everywhere", []int{1, 1}, []int{4, 4}, []int{50, 50}}, // 35 + 35 normalized to 70
		{"three levels", []int{0, 1, 2}, []int{2, 2, 2}, []int{0, 70, 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := priorityLoads(tc.healthy, tc.total)
			sum := 0
			for _, l := range got {
				sum += l
			}
			if !slices.Equal(got, tc.want) || sum != 100 {
				t.Errorf("priorityLoads(%v, %v) = %v, want %v", tc.healthy, tc.total, got, tc.want)
			}
		})
	}
}

// priorityCLA is a load assignment of cluster "c": a local locality at
// priority 0 with local endpoints (the first unhealthy ones marked so) and
// a remote one at priority 1.
func priorityCLA(local, unhealthy, remote int) *endpointv3.ClusterLoadAssignment {
	lbes := func(prefix string, n, sick int) []*endpointv3.LbEndpoint {
		var out []*endpointv3.LbEndpoint
		for i := range n {
			e := cla("c", testEndpoint{addr: prefix + string(rune('1'+i)), port: 80}).GetEndpoints()[0].GetLbEndpoints()[0]
			if i < sick {
				e.HealthStatus = corev3.HealthStatus_UNHEALTHY
			}
			out = append(out, e)
		}
		return out
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: "c", Endpoints: []*endpointv3.LocalityLbEndpoints{
		{Locality: &corev3.Locality{Zone: "a"}, Priority: 0, LbEndpoints: lbes("10.0.1.", local, unhealthy)},
		{Locality: &corev3.Locality{Zone: "b"}, Priority: 1, LbEndpoints: lbes("10.0.2.", remote, 0)},
	}}
}

// TestPriorityFailover: the requests go to the local (priority 0)
// endpoints while they are healthy, spill over to the remote ones in the
// share Envoy's overprovisioning gives as local ones turn unhealthy, and
// all go remote when no local one is left; for every balancer. Counts,
// not time.
func TestPriorityFailover(t *testing.T) {
	t.Parallel()
	const picks = 3000
	balancers := map[string]func(*clusterv3.Cluster){
		"round robin":   func(*clusterv3.Cluster) {},
		"least request": func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST },
		"random":        func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RANDOM },
		"ring hash":     ringHash,
	}
	for _, tc := range []struct {
		name                       string
		local, unhealthy, remote   int
		wantLocalMin, wantLocalMax float64
	}{
		{"local healthy", 2, 0, 3, 1, 1},
		{"one of three local healthy", 3, 2, 3, 0.40, 0.52}, // 46%
		{"local all unhealthy", 2, 2, 3, 0, 0},
		{"no local endpoint", 0, 0, 3, 0, 0},
	} {
		for name, with := range balancers {
			t.Run(tc.name+"/"+name, func(t *testing.T) {
				t.Parallel()
				c := edsCluster("c")
				with(c)
				cl := mustCluster(t, c)
				assignment := priorityCLA(tc.local, tc.unhealthy, tc.remote)
				if err := xdscheck.Check(assignment); err != nil {
					t.Fatalf("Check: %v", err)
				}
				if err := cl.SetEndpoints(assignment); err != nil {
					t.Fatalf("SetEndpoints: %v", err)
				}
				local := 0
				for i := range picks {
					var e string
					var ok bool
					if name == "ring hash" {
						e, ok = cl.NextFor(HashKey("user-" + string(rune(i))))
					} else {
						e, ok = cl.Next()
					}
					if !ok {
						t.Fatal("no endpoint")
					}
					if strings.HasPrefix(e, "10.0.1.") {
						local++
						if tc.unhealthy > 0 && e == "10.0.1.1:80" {
							t.Fatalf("picked the unhealthy %s", e)
						}
					}
				}
				share := float64(local) / picks
				if share < tc.wantLocalMin || share > tc.wantLocalMax {
					t.Errorf("local share %.3f, want %.2f to %.2f", share, tc.wantLocalMin, tc.wantLocalMax)
				}
			})
		}
	}
}

// TestPriorityRefused: a priority over the bound is refused, naming the
// locality.
func TestPriorityRefused(t *testing.T) {
	t.Parallel()
	assignment := priorityCLA(1, 0, 1)
	assignment.Endpoints[1].Priority = maxPriority + 1
	err := CheckEndpoints(assignment)
	if err == nil || !strings.Contains(err.Error(), "endpoints[1].priority") {
		t.Errorf("CheckEndpoints: %v, want endpoints[1].priority refused", err)
	}
}

// TestPriorityFailoverOnEjection: with outlier detection, local endpoints
// that are ejected count as unhealthy for their level: the local share of
// the requests falls as Envoy's overprovisioning says (two of three
// ejected: 46%), to none when all are, and comes back with them. Ejected
// endpoints get no request meanwhile.
func TestPriorityFailoverOnEjection(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c := edsCluster("c")
		outlier(func(od *clusterv3.OutlierDetection) {
			od.Consecutive_5Xx = wrapperspb.UInt32(1)
			od.MaxEjectionPercent = wrapperspb.UInt32(100)
		})(c)
		cl := mustCluster(t, c)
		t.Cleanup(cl.Close)
		if err := cl.SetEndpoints(priorityCLA(3, 0, 3)); err != nil {
			t.Fatalf("SetEndpoints: %v", err)
		}
		const n = 3000
		localShare := func() float64 {
			local := 0
			for range n {
				e, ok := cl.Next()
				if !ok {
					t.Fatal("no endpoint")
				}
				if !cl.endpoints.Load().isAvailable(e) {
					t.Fatalf("picked the ejected %s", e)
				}
				if strings.HasPrefix(e, "10.0.1.") {
					local++
				}
			}
			return float64(local) / n
		}
		if s := localShare(); s != 1 {
			t.Fatalf("local share %.3f with every local endpoint healthy, want 1", s)
		}
		record(cl, "10.0.1.1:80", 1, status(503), nil)
		record(cl, "10.0.1.2:80", 1, status(503), nil)
		if s := localShare(); s < 0.40 || s > 0.52 {
			t.Errorf("local share %.3f with two of three local endpoints ejected, want about 0.46", s)
		}
		record(cl, "10.0.1.3:80", 1, status(503), nil)
		if s := localShare(); s != 0 {
			t.Errorf("local share %.3f with every local endpoint ejected, want 0", s)
		}
		time.Sleep(45 * time.Second) // base_ejection_time 30s, at an interval tick
		synctest.Wait()
		if s := localShare(); s != 1 {
			t.Errorf("local share %.3f once the ejections ended, want 1", s)
		}
	})
}
