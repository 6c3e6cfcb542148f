package policy

import (
	"fmt"
	"strings"
)

// Error is one problem found in a policy file.
type Error struct {
	File    string // path as given to the loader
	Line    int    // 1-based; 0 when unknown
	Field   string // field path, e.g. spec.rules[0].backendRefs[1].name; may be empty
	Message string

	attr attribution
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
	}
	b.WriteString(": ")
	if e.Field != "" {
		b.WriteString(e.Field)
		b.WriteString(": ")
	}
	b.WriteString(e.Message)
	return b.String()
}

// ErrorList is every problem found in one load, in file and line order.
type ErrorList []*Error

func (l ErrorList) Error() string {
	msgs := make([]string, len(l))
	for i, e := range l {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "\n")
}

// errorClass is what an error does to the resource it belongs to (see
// Evaluate).
type errorClass uint8

const (
	// classInvalid: the resource itself is wrong; it is rejected.
	classInvalid errorClass = iota
	// classRef: a reference (a route's backendRef, a SecurityPolicy's
	// targetRef) does not resolve; the resource is accepted and that
	// reference resolves to nothing.
	classRef
	// classParent: a route's parentRef (index) does not attach; the route
	// is accepted for its other parents.
	classParent
	// classListener: one listener (index) of a Gateway is not programmed;
	// the Gateway keeps its other listeners.
	classListener
)

// attribution says which resource document an Error belongs to and what it
// does to it. It is not part of the error's text.
type attribution struct {
	// doc is the document of the resource the error is about (its Source);
	// zero when the error is about no resource (a file that cannot be read).
	doc   documentID
	class errorClass
	// index is the parentRef (classParent) or listener (classListener).
	index int
	// reason is the Gateway API condition reason the error sets.
	reason string
	// cascade marks an error that follows from another resource's
	// rejection (a reference to a rejected resource, a route on an invalid
	// listener): it is in the statuses, not in Result.Errors (which lists
	// the problems of the files as written).
	cascade bool
}
