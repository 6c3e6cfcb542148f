package controlplane

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// DefaultDestructiveHold is how long a destructive policy change must stay
// unchanged before it is applied (Options.DestructiveHold). It is longer than
// the reload debounce: an editor that truncates a file before writing it
// again, or a copy of a policy directory, leaves the files empty for longer
// than a debounce, but not for seconds.
const DefaultDestructiveHold = 5 * time.Second

// policyInput is the policy as read from its source: the policy files (or
// the KV entries of a PolicySource), before they are validated with the
// discovered services.
type policyInput struct {
	files []policy.File
	// readErrors are the files that could not be read (policy.Input.ReadErrors):
	// their last good resources keep serving.
	readErrors policy.ErrorList
	// version is inputVersion(files, readErrors).
	version string
}

// inputVersion is model.PolicyVersion(files), and when some files could
// not be read, a version that also names them and why: an unreadable file
// and a file removed are two policies.
func inputVersion(files []policy.File, readErrors policy.ErrorList) string {
	if len(readErrors) == 0 {
		return model.PolicyVersion(files)
	}
	all := slices.Clone(files)
	for _, e := range readErrors {
		all = append(all, policy.File{Name: "\x00unread:" + e.File, Data: []byte(e.Message)})
	}
	return model.PolicyVersion(all)
}

// policySummary is what the destructive-change rules compare between the
// applied policy and a new one.
type policySummary struct {
	input policyInput
	// docs counts the documents (resources) of each policy file.
	docs map[string]int
	// gatewayRules counts the route rules of each Gateway of the model.
	gatewayRules map[model.NamespacedName]int
	// set and result are the policy's evaluation (the set compiled).
	set    *policy.Set
	result *policy.Result
}

// summarize counts the documents of each of in's files in set (the
// discovered services of set are in no policy file) and the route rules of
// each Gateway of m.
func summarize(in policyInput, set *policy.Set, m *model.Model) *policySummary {
	sum := &policySummary{input: in, docs: make(map[string]int, len(in.files)), gatewayRules: map[model.NamespacedName]int{}}
	for _, f := range in.files {
		sum.docs[f.Name] = 0
	}
	for _, e := range in.readErrors {
		// Its last good resources, kept, count as its documents.
		sum.docs[e.File] = 0
	}
	count := func(src policy.Source) {
		if _, ok := sum.docs[src.File]; ok {
			sum.docs[src.File]++
		}
	}
	for _, r := range set.Gateways {
		count(r.Source)
	}
	for _, r := range set.HTTPRoutes {
		count(r.Source)
	}
	for _, r := range set.Services {
		count(r.Source)
	}
	for _, r := range set.SecurityPolicies {
		count(r.Source)
	}
	for _, r := range set.TrafficPolicies {
		count(r.Source)
	}
	if set.MeshConfig != nil {
		count(set.MeshConfig.Source)
	}
	for _, r := range set.GatewayClasses {
		count(r.Source)
	}
	for _, r := range set.ReferenceGrants {
		count(r.Source)
	}
	for _, r := range set.Namespaces {
		count(r.Source)
	}
	for _, gw := range m.Gateways {
		sum.gatewayRules[gw.NamespacedName] = gw.RuleCount()
	}
	return sum
}

// total is the number of policy documents.
func (s *policySummary) total() int {
	n := 0
	for _, d := range s.docs {
		n += d
	}
	return n
}

// destructiveChange says why replacing the applied policy prev with next
// looks like an accident rather than an intent, "" when it does not: a
// policy file (or KV entry) that is still there but holds no document any
// more while it held some, no policy document left at all while there were
// some, or a Gateway that loses every route rule it had (or disappears with
// them). A file removed on purpose is not destructive by itself.
func destructiveChange(prev, next *policySummary) string {
	var reasons []string
	for _, name := range slices.Sorted(maps.Keys(next.docs)) {
		if had := prev.docs[name]; had > 0 && next.docs[name] == 0 {
			reasons = append(reasons, fmt.Sprintf("policy file %s holds no document any more (it held %d)", name, had))
		}
	}
	if had := prev.total(); had > 0 && next.total() == 0 {
		reasons = append(reasons, fmt.Sprintf("no policy document is left (there were %d)", had))
	}
	for _, gw := range slices.SortedFunc(maps.Keys(prev.gatewayRules), func(a, b model.NamespacedName) int {
		return strings.Compare(a.String(), b.String())
	}) {
		if had := prev.gatewayRules[gw]; had > 0 && next.gatewayRules[gw] == 0 {
			reasons = append(reasons, fmt.Sprintf("Gateway %s loses every route (it had %d rules)", gw, had))
		}
	}
	return strings.Join(reasons, "; ")
}

// destructiveHold is a destructive policy change waiting for its
// confirmation: it is applied once the policy has stayed the same (same
// PolicyVersion) for the hold window; another policy meanwhile replaces it.
type destructiveHold struct {
	version string // PolicyVersion of the held policy; "" when none is held
	reason  string
	since   time.Time // when this version was first seen
}

// decide takes a reload whose policy, of the given version, is destructive
// for reason, at now: apply reports whether it is applied now (the same
// version has been held for window); otherwise wait is how long until it
// may be, and started reports whether the hold of this version begins now.
func (h *destructiveHold) decide(version, reason string, now time.Time, window time.Duration) (apply, started bool, wait time.Duration) {
	if h.version != version {
		*h = destructiveHold{version: version, reason: reason, since: now}
		return false, true, window
	}
	if held := now.Sub(h.since); held < window {
		return false, false, window - held
	}
	*h = destructiveHold{}
	return true, false, 0
}

// active reports whether a change is held.
func (h *destructiveHold) active() bool { return h.version != "" }
