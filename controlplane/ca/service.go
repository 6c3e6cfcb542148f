package ca

import (
	"context"
	"crypto/x509"
	"errors"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	cav1 "github.com/meshgate/meshgate/api/ca/v1"
	"github.com/meshgate/meshgate/api/spiffeid"
	"github.com/meshgate/meshgate/api/token"
	"github.com/meshgate/meshgate/controlplane/tokens"
)

// TokenVerifier checks join tokens; *tokens.Registry is one.
type TokenVerifier interface {
	Verify(ctx context.Context, token string) (tokens.Record, error)
}

// Service is the meshgate.ca.v1.CertificateAuthority gRPC service.
type Service struct {
	cav1.UnimplementedCertificateAuthorityServer
	ca          *CA
	tokens      TokenVerifier
	settings    Settings
	logger      *slog.Logger
	onIssue     func(spiffeid.ID, *x509.Certificate)
	revocations *Revocations
}

// OnIssue sets a function called with every certificate issued (for
// status reporting); call it before serving.
func (s *Service) OnIssue(f func(spiffeid.ID, *x509.Certificate)) { s.onIssue = f }

// SetRevocations makes the service refuse renewals of revoked certificates
// and enrolments with tokens that predate their identity's revocation; call
// it before serving. Without it nothing but the token itself is checked.
func (s *Service) SetRevocations(r *Revocations) { s.revocations = r }

// NewService returns the gRPC service of c.
func NewService(c *CA, tv TokenVerifier, settings Settings, logger *slog.Logger) *Service {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Service{ca: c, tokens: tv, settings: settings, logger: logger}
}

// Register adds the service to g.
func (s *Service) Register(g *grpc.Server) { cav1.RegisterCertificateAuthorityServer(g, s) }

// ErrNoClientCertificate is returned (wrapped) by PeerIdentity when the peer
// presented no certificate.
var ErrNoClientCertificate = errors.New("no client certificate")

// PeerIdentity returns the SPIFFE ID of the TLS client certificate of the
// gRPC peer in ctx, verified against the current trust bundle, with the
// certificate.
func (c *CA) PeerIdentity(ctx context.Context) (spiffeid.ID, *x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return spiffeid.ID{}, nil, ErrNoClientCertificate
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return spiffeid.ID{}, nil, ErrNoClientCertificate
	}
	leaf := info.State.PeerCertificates[0]
	id, err := c.VerifyLeaf(leaf, info.State.PeerCertificates[1:], x509.ExtKeyUsageClientAuth)
	if err != nil {
		return spiffeid.ID{}, nil, err
	}
	return id, leaf, nil
}

// Sign implements cav1.CertificateAuthorityServer.
func (s *Service) Sign(ctx context.Context, req *cav1.SignRequest) (*cav1.SignResponse, error) {
	td, ttl := s.settings()
	peerAddr := ""
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		peerAddr = p.Addr.String()
	}
	refuse := func(code codes.Code, msg string, attrs ...any) error {
		s.logger.Warn("certificate request refused", append([]any{"peer", peerAddr, "code", code.String(), "reason", msg}, attrs...)...)
		return status.Error(code, msg)
	}

	csr, id, err := ValidateCSR(req.GetCsrPem(), td)
	if err != nil {
		return nil, refuse(codes.InvalidArgument, "invalid CSR: "+err.Error())
	}

	if cp := spiffeid.ControlPlane(td); id.Namespace == cp.Namespace {
		return nil, refuse(codes.PermissionDenied, "the namespace "+cp.Namespace+" is reserved for the control plane")
	}

	var via []any
	var enrolment Enrolment
	peerID, peerLeaf, peerErr := s.ca.PeerIdentity(ctx)
	switch {
	case peerErr == nil:
		if peerID != id {
			return nil, refuse(codes.PermissionDenied, "the client certificate of "+peerID.String()+" may only renew that identity, not "+id.String())
		}
		// A renewal inherits the lineage of the certificate it presents;
		// one issued before lineages were recorded starts a new one.
		e, ok := EnrolmentOf(peerLeaf)
		if s.revocations != nil {
			err := s.revocations.CheckCertificate(ctx, peerID, peerLeaf)
			switch {
			case errors.Is(err, ErrRevoked):
				return nil, refuse(codes.PermissionDenied, "renewal refused: "+err.Error(), "spiffeID", id.String(), "enrolment", e.ID)
			case err != nil:
				// The store is unreachable: renew unless the revocations
				// last read revoke the certificate.
				if known := s.revocations.KnownRevoked(peerID, peerLeaf); known != nil {
					return nil, refuse(codes.PermissionDenied, "renewal refused: "+known.Error(), "spiffeID", id.String(), "enrolment", e.ID)
				}
				s.logger.Warn("cannot read revocations from the store: renewing by the revocations last read", "spiffeID", id.String(), "error", err)
			}
		}
		if !ok {
			if e, err = NewEnrolment("", s.ca.now()); err != nil {
				s.logger.Error("cannot start an enrolment", "error", err)
				return nil, status.Error(codes.Internal, "cannot issue the certificate")
			}
		}
		enrolment = e
		via = []any{"auth", "certificate", "enrolment", e.ID}
	case req.GetToken() == "":
		if !errors.Is(peerErr, ErrNoClientCertificate) {
			return nil, refuse(codes.Unauthenticated, "client certificate not accepted: "+peerErr.Error(), "spiffeID", id.String())
		}
		return nil, refuse(codes.Unauthenticated, "a join token or a client certificate is required", "spiffeID", id.String())
	default:
		tokenAttrs := []any{"spiffeID", id.String()}
		if t, err := token.Parse(req.GetToken()); err == nil {
			tokenAttrs = append(tokenAttrs, "token", t.ID) // the id is public; never log the secret
		}
		rec, err := s.tokens.Verify(ctx, req.GetToken())
		switch {
		case errors.Is(err, tokens.ErrInvalid):
			return nil, refuse(codes.Unauthenticated, "invalid join token", tokenAttrs...)
		case errors.Is(err, tokens.ErrExpired):
			return nil, refuse(codes.Unauthenticated, "join token expired", tokenAttrs...)
		case errors.Is(err, tokens.ErrRevoked):
			return nil, refuse(codes.Unauthenticated, "join token revoked", tokenAttrs...)
		case err != nil:
			s.logger.Error("cannot verify join token", append(tokenAttrs, "error", err)...)
			return nil, status.Error(codes.Unavailable, "cannot verify the join token now; retry")
		}
		if rec.Service != id.Service || rec.Namespace != id.Namespace {
			return nil, refuse(codes.PermissionDenied, "the join token is for service "+rec.Namespace+"/"+rec.Service+", not "+id.String(), tokenAttrs...)
		}
		if s.revocations != nil {
			err := s.revocations.CheckToken(ctx, id, rec)
			switch {
			case errors.Is(err, ErrRevoked):
				return nil, refuse(codes.Unauthenticated, "join token revoked: "+err.Error(), tokenAttrs...)
			case err != nil:
				s.logger.Error("cannot check revocations", append(tokenAttrs, "error", err)...)
				return nil, status.Error(codes.Unavailable, "cannot check revocations now; retry")
			}
		}
		if enrolment, err = NewEnrolment(rec.ID, s.ca.now()); err != nil {
			s.logger.Error("cannot start an enrolment", "error", err)
			return nil, status.Error(codes.Internal, "cannot issue the certificate")
		}
		via = []any{"auth", "token", "token", rec.ID, "enrolment", enrolment.ID}
	}

	issued, err := s.ca.IssueEnrolled(csr.PublicKey, id, ttl, enrolment)
	if err != nil {
		s.logger.Error("cannot issue certificate", "spiffeID", id.String(), "error", err)
		return nil, status.Error(codes.Internal, "cannot issue the certificate")
	}
	if s.onIssue != nil {
		s.onIssue(id, issued.Leaf)
	}
	s.logger.Info("certificate issued", append([]any{"peer", peerAddr, "spiffeID", id.String(),
		"serial", issued.Leaf.SerialNumber.Text(16), "notAfter", issued.Leaf.NotAfter}, via...)...)
	return &cav1.SignResponse{
		CertChainPem:   issued.ChainPEM,
		TrustBundlePem: issued.BundlePEM,
		SpiffeId:       id.String(),
		NotBefore:      timestamppb.New(issued.Leaf.NotBefore),
		NotAfter:       timestamppb.New(issued.Leaf.NotAfter),
	}, nil
}
