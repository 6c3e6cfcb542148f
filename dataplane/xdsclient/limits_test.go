package xdsclient

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/meshgate/meshgate/internal/testutil"
)

// syncBuffer is a log sink safe for the client's goroutine and the test's.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// bigClusters is a CDS snapshot whose response is about size bytes.
func bigClusters(t *testing.T, version string, size int) *cachev3.Snapshot {
	t.Helper()
	ads := &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}
	var clusters []types.Resource
	for i := 0; i*1024 < size; i++ {
		clusters = append(clusters, &clusterv3.Cluster{
			Name:                 strings.Repeat("c", 1000) + string(rune('a'+i%26)) + strings.Repeat("x", i/26),
			ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: ads},
		})
	}
	snap, err := cachev3.NewSnapshot(version, map[resourcev3.Type][]types.Resource{resourcev3.ClusterType: clusters})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// TestClientKeepsLastConfigWhenResponseTooLarge: a response over
// MaxRecvMsgSize never reaches Apply (the last accepted version stays), the
// log says why, and the client reconnects and takes the next response that
// fits.
func TestClientKeepsLastConfigWhenResponseTooLarge(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	cp := startControlPlane(t, "127.0.0.1:0", nil)
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, bigClusters(t, "v1", 4<<10)); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	var logs syncBuffer
	c, err := New(Options{
		Node:           &corev3.Node{Id: nodeID},
		Addresses:      []string{cp.addr},
		Apply:          rec.apply,
		Logger:         slog.New(slog.NewTextHandler(&logs, nil)),
		BackoffInitial: 20 * time.Millisecond,
		BackoffMax:     100 * time.Millisecond,
		MaxRecvMsgSize: limit,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Errorf("Run() = %v, want context.Canceled", err)
		}
	})
	rec.waitVersion(t, ClusterType, "v1")

	if err := cp.cache.SetSnapshot(context.Background(), nodeID, bigClusters(t, "v2", 4*limit)); err != nil {
		t.Fatal(err)
	}
	// The client reconnects: a second stream opens with the node, resuming
	// from the last accepted version v1.
	cp.waitRequest(t, "a new stream resuming from v1", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetNode() != nil && r.GetTypeUrl() == ClusterType && r.GetVersionInfo() == "v1"
	})
	testutil.Eventually(t, 30*time.Second, "the log says why the stream ended", func() error {
		if log := logs.String(); !strings.Contains(log, "keeping the last accepted configuration") {
			return fmt.Errorf("log:\n%s", log)
		}
		return nil
	})
	if log := logs.String(); !strings.Contains(log, "max_recv_bytes=65536") || !strings.Contains(log, "ResourceExhausted") {
		t.Errorf("log lacks the limit or the cause:\n%s", log)
	}
	rec.mu.Lock()
	got := rec.versions[ClusterType]
	rec.mu.Unlock()
	if got != "v1" {
		t.Fatalf("CDS version = %q after an oversized response, want v1 kept", got)
	}

	// A response that fits again is taken.
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, bigClusters(t, "v3", 8<<10)); err != nil {
		t.Fatal(err)
	}
	rec.waitVersion(t, ClusterType, "v3")
}

// TestNACKDetailIsBounded: however long the Apply error, the NACK's
// error_detail stays under MaxErrorDetailBytes (plus the note).
func TestNACKDetailIsBounded(t *testing.T) {
	t.Parallel()
	cp := startControlPlane(t, "127.0.0.1:0", nil)
	if err := cp.cache.SetSnapshot(context.Background(), nodeID, snapshot(t, "v1")); err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	rec.reject[ClusterType] = errors.New(strings.Repeat("x", 10<<20))
	runClient(t, []string{cp.addr}, rec.apply)
	nack := cp.waitRequest(t, "CDS NACK", func(r *discoveryv3.DiscoveryRequest) bool {
		return r.GetTypeUrl() == ClusterType && r.GetErrorDetail() != nil
	})
	if n := len(nack.GetErrorDetail().GetMessage()); n > MaxErrorDetailBytes+100 {
		t.Fatalf("NACK error_detail is %d bytes", n)
	}
}

func TestErrorDetail(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		msg     string
		wantLen int
		suffix  string
	}{
		{"short kept", "listener \"a\": bad", len("listener \"a\": bad"), "bad"},
		{"exactly the limit kept", strings.Repeat("y", MaxErrorDetailBytes), MaxErrorDetailBytes, "y"},
		{"long cut", strings.Repeat("y", MaxErrorDetailBytes+1), MaxErrorDetailBytes + len("... (error truncated, 4097 bytes in all)"), "4097 bytes in all)"},
		{"cut at a rune boundary", strings.Repeat("y", MaxErrorDetailBytes-1) + "é" + "z", MaxErrorDetailBytes - 1 + len("... (error truncated, 4098 bytes in all)"), "4098 bytes in all)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ErrorDetail(errors.New(tt.msg))
			if len(got) != tt.wantLen || !strings.HasSuffix(got, tt.suffix) {
				t.Errorf("ErrorDetail = %d bytes ending %q, want %d bytes ending %q", len(got), got[max(0, len(got)-40):], tt.wantLen, tt.suffix)
			}
		})
	}
}
