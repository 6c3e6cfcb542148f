package translate

import (
	"fmt"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// The Gateway API traffic fields of a rule, on the wire:
//
//   - timeouts.backendRequest: RetryPolicy.per_try_timeout (with
//     num_retries 0 when the rule does not retry);
//   - retry: RetryPolicy (retry_on connect-failure,reset and, with codes,
//     retriable-status-codes; num_retries; retry_back_off), with the
//     previous_hosts predicate, so that a retry goes to another endpoint
//     when there is one;
//   - RequestMirror filters: RouteAction.request_mirror_policies;
//   - backendRefs[].filters: the header lists of the WeightedCluster entry.

// Retry defaults, where the Gateway API leaves them to the implementation.
const (
	// defaultRetryAttempts is num_retries when the retry stanza has no
	// attempts: Envoy's default.
	defaultRetryAttempts = 1
	// retryBackoffMaxFactor: retry_back_off.max_interval is this many times
	// the base interval, Envoy's default.
	retryBackoffMaxFactor = 10
	// minRetryBackoff is the smallest base_interval Envoy accepts.
	minRetryBackoff = time.Millisecond
	// hostSelectionAttempts is host_selection_retry_max_attempts: how many
	// endpoints a retry may pick before settling for one already tried.
	hostSelectionAttempts = 3
)

// PreviousHostsPredicateName is the retry host predicate that makes a retry
// prefer an endpoint not tried yet for the request.
const PreviousHostsPredicateName = "envoy.retry_host_predicates.previous_hosts"

// setTraffic sets the retry policy, the route timeout it implies and the
// mirror policies of a rule's route action (adding the mirrors' clusters).
func setTraffic(m *model.Model, clusters *clusterCollector, ra *routev3.RouteAction, a *model.Action) error {
	if err := setRetryPolicy(ra, a); err != nil {
		return err
	}
	for _, mr := range a.Mirrors {
		if p := mirrorPolicy(m, clusters, mr); p != nil {
			ra.RequestMirrorPolicies = append(ra.RequestMirrorPolicies, p)
		}
	}
	return nil
}

// setRetryPolicy translates the rule's retry stanza and backendRequest
// timeout. When the rule has a backendRequest timeout but no request
// timeout, each try is bounded and their number is, so the route timeout
// (Envoy's default of 15 s) is disabled rather than cut the last try short.
func setRetryPolicy(ra *routev3.RouteAction, a *model.Action) error {
	perTry := a.BackendRequestTimeout
	if a.Retry == nil && (perTry == nil || *perTry == 0) {
		return nil
	}
	p := &routev3.RetryPolicy{NumRetries: wrapperspb.UInt32(0)}
	if perTry != nil && *perTry > 0 {
		p.PerTryTimeout = durationpb.New(*perTry)
		if a.Timeout == nil {
			ra.Timeout = durationpb.New(0)
		}
	}
	if r := a.Retry; r != nil {
		retryOn := []string{"connect-failure", "reset"}
		if len(r.Codes) > 0 {
			retryOn = append(retryOn, "retriable-status-codes")
			for _, c := range r.Codes {
				p.RetriableStatusCodes = append(p.RetriableStatusCodes, uint32(c))
			}
		}
		p.RetryOn = strings.Join(retryOn, ",")
		attempts := defaultRetryAttempts
		if r.Attempts != nil {
			attempts = *r.Attempts
		}
		p.NumRetries = wrapperspb.UInt32(uint32(attempts))
		if r.Backoff != nil {
			base := max(*r.Backoff, minRetryBackoff)
			p.RetryBackOff = &routev3.RetryPolicy_RetryBackOff{
				BaseInterval: durationpb.New(base),
				MaxInterval:  durationpb.New(base * retryBackoffMaxFactor),
			}
		}
		predicate, err := anypb.New(&previoushostsv3.PreviousHostsPredicate{})
		if err != nil {
			return fmt.Errorf("%s: %w", PreviousHostsPredicateName, err)
		}
		p.RetryHostPredicate = []*routev3.RetryPolicy_RetryHostPredicate{{
			Name:       PreviousHostsPredicateName,
			ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: predicate},
		}}
		p.HostSelectionRetryMaxAttempts = hostSelectionAttempts
	}
	ra.RetryPolicy = p
	return nil
}

// mirrorPolicy is the request mirror policy of one RequestMirror filter;
// nil when its backend does not resolve or it mirrors nothing.
func mirrorPolicy(m *model.Model, clusters *clusterCollector, mr *model.Mirror) *routev3.RouteAction_RequestMirrorPolicy {
	if mr.Backend.Cluster == "" || mr.Numerator <= 0 || mr.Denominator <= 0 {
		return nil
	}
	if svc := m.Service(mr.Backend.Service.Namespace, mr.Backend.Service.Name); svc != nil {
		if port := svc.Port(mr.Backend.Port); port != nil {
			clusters.add(svc, port)
		}
	}
	p := &routev3.RouteAction_RequestMirrorPolicy{Cluster: mr.Backend.Cluster}
	if mr.Numerator < mr.Denominator {
		p.RuntimeFraction = &corev3.RuntimeFractionalPercent{DefaultValue: fractionalPercent(mr.Numerator, mr.Denominator)}
	}
	return p
}

// fractionalPercent is n/d as Envoy writes a share: per hundred when d is
// 100, else per million (rounded to the nearest).
func fractionalPercent(n, d int32) *typev3.FractionalPercent {
	if d == 100 {
		return &typev3.FractionalPercent{Numerator: uint32(n), Denominator: typev3.FractionalPercent_HUNDRED}
	}
	perMillion := (int64(n)*1_000_000 + int64(d)/2) / int64(d)
	return &typev3.FractionalPercent{Numerator: uint32(perMillion), Denominator: typev3.FractionalPercent_MILLION}
}

// hasBackendFilters reports whether a backendRef of the action has filters
// of its own: its route then names its clusters as weighted clusters, even
// one, to carry them.
func hasBackendFilters(a *model.Action) bool {
	for _, b := range a.Backends {
		if b.RequestHeaders != nil || b.ResponseHeaders != nil {
			return true
		}
	}
	return false
}

// setBackendHeaders gives a weighted cluster entry its backendRef's header
// modifiers: remove, then set (overwrite), then add (append), as the rule's
// apply.
func setBackendHeaders(cw *routev3.WeightedCluster_ClusterWeight, b *model.Backend) {
	if h := b.RequestHeaders; h != nil {
		cw.RequestHeadersToRemove = h.Remove
		cw.RequestHeadersToAdd = headerOptions(h)
	}
	if h := b.ResponseHeaders; h != nil {
		cw.ResponseHeadersToRemove = h.Remove
		cw.ResponseHeadersToAdd = headerOptions(h)
	}
}

func headerOptions(h *model.HeaderModifier) []*corev3.HeaderValueOption {
	out := make([]*corev3.HeaderValueOption, 0, len(h.Set)+len(h.Add))
	for _, s := range h.Set {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: s.Name, Value: escapePercent(s.Value)},
			AppendAction: corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD,
		})
	}
	for _, s := range h.Add {
		out = append(out, &corev3.HeaderValueOption{
			Header:       &corev3.HeaderValue{Key: s.Name, Value: escapePercent(s.Value)},
			AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD,
		})
	}
	return out
}
