package controlplane

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/xdsnode"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/meshgate/meshgate/controlplane/ca"
	"github.com/meshgate/meshgate/controlplane/translate"
	"github.com/meshgate/meshgate/controlplane/xds"
)

// issuedExpiry remembers, for /status, the expiry of the newest certificate
// issued to each identity: a proxy renews over the CA service while its xDS
// stream stays open with the certificate it had.
type issuedExpiry struct {
	mu     sync.Mutex
	expiry map[string]time.Time // SPIFFE ID -> newest NotAfter issued
	count  int64                // certificates issued since the start (metrics)
}

func newIssuedExpiry() *issuedExpiry {
	return &issuedExpiry{expiry: map[string]time.Time{}}
}

// issued records a certificate issued by the CA service.
func (e *issuedExpiry) issued(id spiffeid.ID, leaf *x509.Certificate) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.count++
	if key := id.String(); leaf.NotAfter.After(e.expiry[key]) {
		e.expiry[key] = leaf.NotAfter
	}
}

// newest is the later of notAfter and the newest expiry issued to spiffeID.
func (e *issuedExpiry) newest(spiffeID string, notAfter time.Time) time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	if t := e.expiry[spiffeID]; t.After(notAfter) {
		return t
	}
	return notAfter
}

// authorizeProxy is the xDS server's authorizer: the peer must present a
// client certificate from the mesh CA, not revoked, and the node of the
// stream's first request must be the one that certificate names.
func (cp *ControlPlane) authorizeProxy(ctx context.Context, node *corev3.Node) (xds.ProxyIdentity, error) {
	id, leaf, err := cp.ca.PeerIdentity(ctx)
	if err != nil {
		cp.logger.Warn("xDS stream refused", "node", node.GetId(), "peer", peerAddr(ctx), "reason", err.Error())
		if errors.Is(err, ca.ErrNoClientCertificate) {
			return xds.ProxyIdentity{}, grpcstatus.Error(codes.Unauthenticated, "xDS requires a client certificate from the mesh CA (get one with a join token)")
		}
		return xds.ProxyIdentity{}, grpcstatus.Error(codes.Unauthenticated, "client certificate not accepted: "+err.Error())
	}
	if err := checkNode(id, node); err != nil {
		cp.logger.Warn("xDS stream refused", "node", node.GetId(), "peer", peerAddr(ctx), "spiffeID", id.String(), "reason", err.Error())
		return xds.ProxyIdentity{}, grpcstatus.Error(codes.PermissionDenied, err.Error())
	}
	if err := cp.guard.check(ctx, id, leaf); err != nil {
		cp.logger.Warn("xDS stream refused: revoked", "node", node.GetId(), "peer", peerAddr(ctx), "spiffeID", id.String(), "reason", err.Error())
		return xds.ProxyIdentity{}, grpcstatus.Error(codes.PermissionDenied, "xDS refused: "+err.Error())
	}
	pid := xds.ProxyIdentity{SPIFFEID: id.String(), NotAfter: leaf.NotAfter}
	if e, ok := ca.EnrolmentOf(leaf); ok {
		pid.Enrolment, pid.TokenID = e.ID, e.TokenID
	}
	return pid, nil
}

// checkNode reports whether the node's metadata names the identity id: a
// sidecar's or proxyless client's namespace/service, a gateway's
// namespace/gateway.
func checkNode(id spiffeid.ID, node *corev3.Node) error {
	if node == nil {
		return errors.New("the first request of a stream must carry the node")
	}
	info := translate.NodeInfoFromNode(node)
	switch info.Role {
	case translate.RoleSidecar, translate.RoleGateway, translate.RoleProxyless:
	default:
		return fmt.Errorf("node %q: unknown role %q", node.GetId(), info.Role)
	}
	if info.Namespace != id.Namespace || info.Name() != id.Service {
		return fmt.Errorf("node %q is %s %s/%s, but its certificate is %s", node.GetId(), info.Role, info.Namespace, info.Name(), id)
	}
	// The node id is the key of the proxy's configuration: it must be one
	// this identity may use, so that no proxy can take another's.
	if prefix := xdsnode.IDPrefix(info.Role, id.Service, id.Namespace); !strings.HasPrefix(node.GetId(), prefix) {
		return fmt.Errorf("node id %q must start with %q for certificate %s", node.GetId(), prefix, id)
	}
	return nil
}

func peerAddr(ctx context.Context) string {
	if p, ok := peerFromContext(ctx); ok {
		return p
	}
	return ""
}

// total is how many certificates the CA service issued since the start.
func (e *issuedExpiry) total() int64 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.count
}
