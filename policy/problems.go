package policy

import (
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Conditions and reasons of problems found after Evaluate, by the control
// plane (Result.WithProblems).
const (
	// ConditionEndpoints is False (reason ReasonInvalidEndpoints) on a
	// Service some of whose endpoints (discovered ones: the Consul catalog)
	// are invalid: those are left out, the others serve.
	ConditionEndpoints     = "meshgate.dev/Endpoints"
	ReasonInvalidEndpoints = "InvalidEndpoints"
	// ConditionCompiled is False (reason ReasonCompileError) on a resource
	// the policy accepted but the control plane could not compile into its
	// model: a bug of meshgate. Nothing of the resource is served (a
	// SecurityPolicy fails closed: its targets deny every request).
	ConditionCompiled  = "meshgate.dev/Compiled"
	ReasonCompileError = "CompileError"
)

// ResourceProblem is a problem with one resource of a Result found after
// Evaluate: what the control plane leaves out of its model.
type ResourceProblem struct {
	Kind, Namespace, Name string
	// File, when set, picks the status of the resource defined there (a
	// discovered service's source, "consul:catalog/orders").
	File string
	// State, when set, replaces the resource's state (StateRejected: none
	// of it serves; StateFailClosed).
	State string
	// Condition is the condition type set False with Reason; Message ends
	// the errors' text in it.
	Condition, Reason, Message string
	// Errors are the problems, added to the Result's Errors and to the
	// resource's Problems.
	Errors ErrorList
}

// WithProblems returns a copy of r with the problems added: to Errors, and
// each to the status of its resource (its Problems, its Reason, a False
// condition of its own; its State when the problem sets one). A problem
// about a resource without a status (not of this policy) adds its errors
// only. r is not modified: its statuses are shared.
func (r *Result) WithProblems(problems []ResourceProblem) *Result {
	if len(problems) == 0 {
		return r
	}
	out := *r
	out.Errors = slices.Clone(r.Errors)
	out.Statuses = slices.Clone(r.Statuses)
	when := metav1.NewTime(now())
	for _, p := range problems {
		out.Errors = append(out.Errors, p.Errors...)
		for i := range out.Statuses {
			s := &out.Statuses[i]
			if s.Kind != p.Kind || s.Namespace != p.Namespace || s.Name != p.Name || (p.File != "" && s.File != p.File) ||
				!s.Serving() || s.State == StateIgnored {
				continue
			}
			s.Problems = slices.Clip(s.Problems)
			for _, err := range p.Errors {
				s.Problems = append(s.Problems, err.Error())
			}
			if p.State != "" {
				s.State, s.Reason = p.State, p.Reason
			} else if s.Reason == "" {
				s.Reason = p.Reason
			}
			msgs := make([]string, 0, len(p.Errors)+1)
			for _, err := range p.Errors {
				msgs = append(msgs, err.Error())
			}
			if p.Message != "" {
				msgs = append(msgs, p.Message)
			}
			if s.Object != nil {
				obj := *s.Object
				obj.Status.Conditions = append(slices.Clip(obj.Status.Conditions), metav1.Condition{Type: p.Condition,
					Status: metav1.ConditionFalse, Reason: p.Reason, Message: strings.Join(msgs, "; "), LastTransitionTime: when})
				s.Object = &obj
			}
			break
		}
	}
	sortErrors(out.Errors)
	return &out
}
