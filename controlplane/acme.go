package controlplane

import (
	"cmp"
	"context"
	"fmt"
	"strings"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/sync/errgroup"

	"github.com/meshgate/meshgate/controlplane/acme"
	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/controlplane/translate"
	"github.com/meshgate/meshgate/policy"
)

// Status condition of a Gateway with listeners whose certificates are
// obtained over ACME: False, with the reasons below, while one of them
// has no certificate yet (that listener is not programmed: the gateways
// do not serve it).
const (
	ConditionACMECertificates = "meshgate.dev/ACMECertificates"
	// ReasonACMEPending: the certificate is being obtained.
	ReasonACMEPending = "Pending"
	// ReasonACMEFailed: obtaining it failed; it is retried with backoff.
	ReasonACMEFailed = "ACMEFailed"
)

// startACME makes the ACME manager (certificates and keys in the control
// plane's state) and runs it in group; its changes request reloads.
func (cp *ControlPlane) startACME(ctx context.Context, group *errgroup.Group, requestReload func()) {
	cp.acme = acme.New(ctx, acme.Options{
		Store:              cp.store,
		Logger:             cp.logger.With("component", "acme"),
		OnChange:           requestReload,
		Ready:              cp.gatewaysSynced,
		RenewCheckInterval: cp.opts.ACMERenewCheckInterval,
	})
	group.Go(func() error {
		cp.acme.Run(ctx)
		return nil
	})
}

// withACME gives the ACME manager the model's ACME listeners and returns
// the model with what it holds for them (model.WithACME), the summary's
// result with the listeners still without a certificate as problems of
// their Gateways, and the generation of the material.
func (cp *ControlPlane) withACME(m *model.Model, sum *policySummary) (*model.Model, *policySummary, uint64, error) {
	if cp.acme == nil {
		return m, sum, 0, nil
	}
	listeners := m.ACMEListeners()
	cp.acme.Sync(listeners)
	if len(listeners) == 0 {
		return m, sum, 0, nil
	}
	mat, gen := cp.acme.Material()
	out, err := m.WithACME(mat)
	if err != nil {
		return nil, nil, 0, fmt.Errorf("ACME certificates: %w", err)
	}
	var problems []policy.ResourceProblem
	for _, s := range cp.acme.Statuses(listeners) {
		l := s.Listener
		var reason, msg string
		switch {
		case s.Ready && s.Error == "":
			continue
		case s.Ready:
			reason, msg = ReasonACMEFailed, fmt.Sprintf("listener %s: renewing its certificate for %s from ACMEIssuer %s failed (retried with backoff; the current certificate, serial %s, expiring %s, keeps serving): %s",
				l.Listener, l.ACME.Hostname, l.ACME.Issuer.NamespacedName, s.Serial, s.NotAfter.UTC().Format(time.RFC3339), s.Error)
		case s.Error != "":
			reason, msg = ReasonACMEFailed, fmt.Sprintf("listener %s: obtaining its certificate for %s from ACMEIssuer %s failed (retried with backoff; the listener is not programmed until it succeeds): %s",
				l.Listener, l.ACME.Hostname, l.ACME.Issuer.NamespacedName, s.Error)
		default:
			reason, msg = ReasonACMEPending, fmt.Sprintf("listener %s: its certificate for %s is being obtained from ACMEIssuer %s; the listener is not programmed until then",
				l.Listener, l.ACME.Hostname, l.ACME.Issuer.NamespacedName)
		}
		e := &policy.Error{Message: "Gateway " + l.Gateway.String() + ": " + msg}
		if sum != nil {
			e.File, e.Line, e.Field = listenerSource(sum.set, l.Listener)
		}
		problems = append(problems, policy.ResourceProblem{Kind: policy.KindGateway, Namespace: l.Gateway.Namespace, Name: l.Gateway.Name,
			Condition: ConditionACMECertificates, Reason: reason, Errors: policy.ErrorList{e}})
	}
	if len(problems) > 0 && sum != nil && sum.result != nil {
		withACME := *sum
		withACME.result = sum.result.WithProblems(problems)
		sum = &withACME
	}
	return out, sum, gen, nil
}

// listenerSource is where the listener "<namespace>/<owner>/<name>" is
// written: its Gateway's file, line and field, or its ListenerSet's file
// and line; nothing when it is not found.
func listenerSource(set *policy.Set, listener string) (file string, line int, field string) {
	if set == nil {
		return "", 0, ""
	}
	parts := strings.SplitN(listener, "/", 3)
	if len(parts) != 3 {
		return "", 0, ""
	}
	for _, g := range set.Gateways {
		if cmp.Or(g.Namespace, policy.DefaultNamespace) != parts[0] || g.Name != parts[1] {
			continue
		}
		for i, ls := range g.Spec.Listeners {
			if string(ls.Name) == parts[2] {
				field = fmt.Sprintf("spec.listeners[%d]", i)
				return g.Source.File, g.Source.LineOf(field), field
			}
		}
	}
	for _, ls := range set.ListenerSets {
		if cmp.Or(ls.Namespace, policy.DefaultNamespace) == parts[0] && ls.Name == parts[1] {
			return ls.Source.File, ls.Source.Line, ""
		}
	}
	return "", 0, ""
}

// noGatewayGrace is how long a challenge waits for a gateway to connect
// to this control plane before it is validated anyway: the gateways of
// the other replicas (sharing the state in Consul) serve it too.
const noGatewayGrace = 5 * time.Second

// gatewaysSynced returns once every gateway connected to this control
// plane has accepted the configuration it was last given (an ACME
// challenge is then served), or, when none is connected, after
// noGatewayGrace; an error if ctx ends first.
func (cp *ControlPlane) gatewaysSynced(ctx context.Context) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	start := time.Now()
	for {
		synced, gateways := true, 0
		for _, p := range cp.xds.Proxies() {
			if p.Role != translate.RoleGateway {
				continue
			}
			gateways++
			// Its listeners and routes (the HTTP-01 challenges) are
			// required; secrets only when it has some.
			for _, typ := range []string{resourcev3.ListenerType, resourcev3.RouteType, resourcev3.SecretType} {
				served, ok := p.Served[typ]
				if (ok || typ != resourcev3.SecretType) && (served == "" || p.Acked[typ] != served) {
					synced = false
				}
			}
		}
		if synced && (gateways > 0 || time.Since(start) >= noGatewayGrace) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the gateways to accept their configuration: %w", ctx.Err())
		case <-t.C:
		}
	}
}
