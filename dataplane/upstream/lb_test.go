package upstream

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// endpoints are n test endpoints 10.0.0.1:80 ... 10.0.0.n:80.
func endpoints(n int) []testEndpoint {
	eps := make([]testEndpoint, n)
	for i := range eps {
		eps[i] = testEndpoint{addr: "10.0.0." + strconv.Itoa(i+1), port: 80}
	}
	return eps
}

// lbCluster is an EDS cluster with lb_policy and lb config set by with,
// given the endpoints eps.
func lbCluster(t *testing.T, with func(c *clusterv3.Cluster), eps []testEndpoint) *Cluster {
	t.Helper()
	c := edsCluster("c")
	with(c)
	cl := mustCluster(t, c)
	if err := cl.SetEndpoints(cla("c", eps...)); err != nil {
		t.Fatalf("SetEndpoints: %v", err)
	}
	return cl
}

func ringHash(c *clusterv3.Cluster) {
	c.LbPolicy = clusterv3.Cluster_RING_HASH
	c.LbConfig = &clusterv3.Cluster_RingHashLbConfig_{RingHashLbConfig: &clusterv3.Cluster_RingHashLbConfig{}}
}

func maglev(c *clusterv3.Cluster) {
	c.LbPolicy = clusterv3.Cluster_MAGLEV
	c.LbConfig = &clusterv3.Cluster_MaglevLbConfig_{MaglevLbConfig: &clusterv3.Cluster_MaglevLbConfig{}}
}

// TestConsistentHashing: a ring hash or Maglev cluster sends a key to one
// endpoint every time, spreads keys over every endpoint, and when one of N
// endpoints leaves only the keys it had move (about 1/N of them), to the
// others.
func TestConsistentHashing(t *testing.T) {
	t.Parallel()
	const n, keys = 5, 2000
	for name, with := range map[string]func(*clusterv3.Cluster){"ring hash": ringHash, "maglev": maglev} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := lbCluster(t, with, endpoints(n))
			key := HashKey("user-42")
			first, _ := c.NextFor(key)
			for range 1000 {
				if e, _ := c.NextFor(key); e != first {
					t.Fatalf("key user-42 went to %s, then %s", first, e)
				}
			}
			before := make([]string, keys)
			perEndpoint := map[string]int{}
			for i := range before {
				before[i], _ = c.NextFor(HashKey("user-" + strconv.Itoa(i)))
				perEndpoint[before[i]]++
			}
			for _, e := range endpoints(n) {
				addr := fmt.Sprintf("%s:%d", e.addr, e.port)
				// Each endpoint gets its share within a factor of two.
				if got := perEndpoint[addr]; got < keys/n/2 || got > keys/n*2 {
					t.Errorf("endpoint %s has %d of %d keys, want about %d", addr, got, keys, keys/n)
				}
			}
			gone := "10.0.0.3:80"
			eps := endpoints(n)
			if err := c.SetEndpoints(cla("c", append(eps[:2:2], eps[3:]...)...)); err != nil {
				t.Fatal(err)
			}
			moved, strays := 0, 0
			for i := range before {
				after, _ := c.NextFor(HashKey("user-" + strconv.Itoa(i)))
				switch {
				case after == gone:
					t.Fatalf("key %d still goes to the endpoint that left", i)
				case after != before[i]:
					moved++
					if before[i] != gone {
						strays++
					}
				}
			}
			// The keys of the endpoint that left move (about 1/n); of the
			// others, at most a few (Maglev's table is rebuilt whole).
			if moved > keys*3/(2*n) || strays > keys/50 {
				t.Errorf("%d of %d keys moved, %d of them from an endpoint that stayed; want about 1/%d, those of the endpoint that left (%d)",
					moved, keys, strays, n, perEndpoint[gone])
			}
		})
	}
}

// TestRingHashKeepsTheKeysOfEndpointsThatStay: with a ring hash, an
// endpoint leaving moves its keys only, whatever the number of endpoints
// (an endpoint's points on the ring do not depend on how many there are).
func TestRingHashKeepsTheKeysOfEndpointsThatStay(t *testing.T) {
	t.Parallel()
	const keys = 2000
	for _, n := range []int{2, 3, 4, 5, 8, 9, 16} {
		t.Run(strconv.Itoa(n)+" endpoints", func(t *testing.T) {
			t.Parallel()
			eps := endpoints(n)
			c := lbCluster(t, ringHash, eps)
			before := make([]string, keys)
			for i := range before {
				before[i], _ = c.NextFor(HashKey("user-" + strconv.Itoa(i)))
			}
			gone := fmt.Sprintf("%s:%d", eps[n-1].addr, eps[n-1].port)
			if err := c.SetEndpoints(cla("c", eps[:n-1]...)); err != nil {
				t.Fatal(err)
			}
			strays := 0
			for i := range before {
				if after, _ := c.NextFor(HashKey("user-" + strconv.Itoa(i))); after != before[i] && before[i] != gone {
					strays++
				}
			}
			if strays > 0 {
				t.Errorf("%d to %d endpoints: %d keys of endpoints that stayed moved, want 0", n, n-1, strays)
			}
		})
	}
}

// TestConsistentHashingHonoursWeights: an endpoint of weight 3 gets about
// three times the keys of one of weight 1.
func TestConsistentHashingHonoursWeights(t *testing.T) {
	t.Parallel()
	for name, with := range map[string]func(*clusterv3.Cluster){"ring hash": ringHash, "maglev": maglev} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			c := lbCluster(t, with, []testEndpoint{{addr: "10.0.0.1", port: 80, weight: 3}, {addr: "10.0.0.2", port: 80, weight: 1}})
			counts := map[string]int{}
			for i := range 4000 {
				e, _ := c.NextFor(HashKey(strconv.Itoa(i)))
				counts[e]++
			}
			if ratio := float64(counts["10.0.0.1:80"]) / float64(counts["10.0.0.2:80"]); ratio < 2 || ratio > 4.5 {
				t.Errorf("picks %v: ratio %.2f, want about 3", counts, ratio)
			}
		})
	}
}

// TestHashClusterWithoutKeySpreads: a request without a key (Next) is
// balanced at random over every endpoint.
func TestHashClusterWithoutKeySpreads(t *testing.T) {
	t.Parallel()
	c := lbCluster(t, ringHash, endpoints(3))
	if got := picks(t, c, 600); len(got) != 3 {
		t.Errorf("picks %v, want all three endpoints", got)
	}
}

// TestLeastRequestPrefersTheLessLoaded: with requests in flight on one
// endpoint, power of two choices sends new requests to the other whenever
// both are drawn, and never to the loaded one when only two exist and the
// draw differs.
func TestLeastRequestPrefersTheLessLoaded(t *testing.T) {
	t.Parallel()
	c := lbCluster(t, func(c *clusterv3.Cluster) {
		c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
		c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(2)}}
	}, endpoints(2))
	var done []func()
	for range 5 {
		done = append(done, c.beginRequest("10.0.0.1:80"))
	}
	counts := picks(t, c, 1000)
	// A draw of the same endpoint twice (half the draws) picks it; a
	// draw of both picks 10.0.0.2: about 3/4 of the picks.
	if counts["10.0.0.2:80"] < 650 || counts["10.0.0.2:80"] > 850 {
		t.Errorf("picks %v: want about 750 of 1000 on the idle endpoint", counts)
	}
	for _, d := range done {
		d()
		d() // ending twice counts once
	}
	if got := c.endpoints.Load().lb.active[0].Load(); got != 0 {
		t.Errorf("requests in flight after every one ended: %d", got)
	}
	counts = picks(t, c, 1000)
	if counts["10.0.0.1:80"] < 400 {
		t.Errorf("picks %v once idle: want both endpoints alike", counts)
	}
}

// TestRandomSpreads: a random cluster picks every endpoint, in proportion.
func TestRandomSpreads(t *testing.T) {
	t.Parallel()
	c := lbCluster(t, func(c *clusterv3.Cluster) { c.LbPolicy = clusterv3.Cluster_RANDOM }, endpoints(4))
	for addr, n := range picks(t, c, 4000) {
		if n < 700 || n > 1300 {
			t.Errorf("endpoint %s picked %d of 4000 times, want about 1000", addr, n)
		}
	}
}

// TestSlowStart: an endpoint added to a cluster gets a small share of the
// picks at first, growing to its full share at the end of the window (in
// virtual time); the cluster's first endpoints start at their full share.
func TestSlowStart(t *testing.T) {
	t.Parallel()
	synctest.Test(t, func(t *testing.T) {
		c := lbCluster(t, func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(time.Minute)}}}
		}, endpoints(1))
		if got := picks(t, c, 100); got["10.0.0.1:80"] != 100 {
			t.Fatalf("picks %v", got)
		}
		if err := c.SetEndpoints(cla("c", endpoints(2)...)); err != nil {
			t.Fatal(err)
		}
		early := picks(t, c, 4000)["10.0.0.2:80"]
		time.Sleep(30 * time.Second)
		half := picks(t, c, 4000)["10.0.0.2:80"]
		time.Sleep(31 * time.Second)
		full := picks(t, c, 4000)["10.0.0.2:80"]
		if !(early < half && half < full) || early > 800 || full < 1800 {
			t.Errorf("the new endpoint's picks of 4000: %d at once, %d after half the window, %d after it; want growing to about 2000", early, half, full)
		}
	})
}

// TestBalancerConfigErrors: the lb configs the proxy does not implement
// are refused.
func TestBalancerConfigErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		with func(c *clusterv3.Cluster)
		want string
	}{
		{"three choices", func(c *clusterv3.Cluster) {
			c.LbPolicy = clusterv3.Cluster_LEAST_REQUEST
			c.LbConfig = &clusterv3.Cluster_LeastRequestLbConfig_{LeastRequestLbConfig: &clusterv3.Cluster_LeastRequestLbConfig{ChoiceCount: wrapperspb.UInt32(3)}}
		}, "choice_count"},
		{"maglev table not prime", func(c *clusterv3.Cluster) {
			maglev(c)
			c.GetMaglevLbConfig().TableSize = wrapperspb.UInt64(65536)
		}, "table_size"},
		{"ring too large", func(c *clusterv3.Cluster) {
			ringHash(c)
			c.GetRingHashLbConfig().MaximumRingSize = wrapperspb.UInt64(1 << 30)
		}, "ring size"},
		{"zero slow start", func(c *clusterv3.Cluster) {
			c.LbConfig = &clusterv3.Cluster_RoundRobinLbConfig_{RoundRobinLbConfig: &clusterv3.Cluster_RoundRobinLbConfig{
				SlowStartConfig: &clusterv3.Cluster_SlowStartConfig{SlowStartWindow: durationpb.New(0)}}}
		}, "slow_start_window"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := edsCluster("c")
			tt.with(c)
			_, err := NewCluster(c, nil, Checked())
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewCluster: %v, want an error naming %s", err, tt.want)
			}
		})
	}
}

// TestNextForAllocatesNothing: picking by key costs no allocation.
func TestNextForAllocatesNothing(t *testing.T) {
	c := lbCluster(t, ringHash, endpoints(3))
	key := HashKey("k")
	if allocs := testing.AllocsPerRun(100, func() { c.NextFor(key) }); allocs != 0 {
		t.Fatalf("NextFor allocates %v times", allocs)
	}
}
