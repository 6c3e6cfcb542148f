// Package xdscheck decides whether an xDS resource stays inside the subset of
// Envoy v3 the meshgate proxy implements (docs/xds.md), so that anything else
// is NACKed with the path of the offending field instead of being ignored.
//
// The subset is a set of Rules, one per message type: the core resources
// (listeners, routes, clusters, endpoints, TLS) here, and what each HTTP
// filter adds (HTTPFilter), contributed from the filter's own package
// (dataplane/filters/<name>) through the filter registry, which builds the
// proxy's Checker with New. Check alone knows the core subset.
package xdscheck

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	// Typed configs of the core subset, registered for Any resolution (an
	// HTTP filter's package registers its own).
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/listener/tls_inspector/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// maxViolations bounds how many violations one error reports.
const maxViolations = 10

// Violation is one field outside the supported subset.
type Violation struct {
	Path   string // e.g. filter_chains[0].filter_chain_match
	Reason string // e.g. "not supported"
}

// Error lists the violations found in one resource.
type Error struct {
	Resource   string // e.g. listener "edge"
	Violations []Violation
}

func (e *Error) Error() string {
	var b strings.Builder
	for i, v := range e.Violations {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(e.Resource)
		b.WriteString(": ")
		if v.Path != "" {
			b.WriteString(v.Path)
			b.WriteString(": ")
		}
		b.WriteString(v.Reason)
	}
	return b.String()
}

// MaxNesting bounds how deeply messages may nest in one resource or typed
// config (an Any counts as a leaf: its content is checked on its own). It is
// checked before anything walks the whole message, generated Validate()
// included, so that a hostile resource is refused in time proportional to the
// bound, not to its depth. Supported resources nest far less (RBAC, the
// deepest, allows 32 levels of and/or: about 70 messages).
const MaxNesting = 100

// tooDeep reports whether m nests messages more than limit levels deep; it
// stops at the first path that does.
func tooDeep(m protoreflect.Message, limit int) bool {
	if limit <= 0 {
		return true
	}
	deep := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList() && fd.Message() != nil:
			l := v.List()
			for i := 0; i < l.Len() && !deep; i++ {
				deep = tooDeep(l.Get(i).Message(), limit-1)
			}
		case fd.IsMap() && fd.MapValue().Message() != nil:
			v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool {
				deep = tooDeep(mv.Message(), limit-1)
				return !deep
			})
		case fd.Message() != nil && !fd.IsList() && !fd.IsMap():
			deep = tooDeep(v.Message(), limit-1)
		}
		return !deep
	})
	return deep
}

// validator is implemented by every generated Envoy message.
type validator interface{ Validate() error }

// Check returns nil when msg passes its generated Validate() and populates
// only fields of the supported subset; otherwise an *Error naming the
// resource and every offending field (up to ten). It never panics.
func (c *Checker) Check(msg proto.Message) error {
	if msg == nil {
		return errors.New("nil resource")
	}
	resource := describe(msg.ProtoReflect())
	if tooDeep(msg.ProtoReflect(), MaxNesting) {
		return fmt.Errorf("%s: messages nested deeper than %d", resource, MaxNesting)
	}
	if v, ok := msg.(validator); ok {
		if err := v.Validate(); err != nil {
			return fmt.Errorf("%s: invalid: %w", resource, err)
		}
	}
	w := walker{subset: c.subset}
	w.message(msg.ProtoReflect(), "", nil)
	if len(w.violations) == 0 {
		return nil
	}
	return &Error{Resource: resource, Violations: w.violations}
}

// describe names a resource the way error messages do: listener "x".
func describe(m protoreflect.Message) string {
	desc := m.Descriptor()
	kind := strings.ToLower(string(desc.Name()))
	switch desc.FullName() {
	case "envoy.config.route.v3.RouteConfiguration":
		kind = "route configuration"
	case "envoy.config.endpoint.v3.ClusterLoadAssignment":
		kind = "cluster load assignment"
	}
	for _, name := range []protoreflect.Name{"name", "cluster_name"} {
		if fd := desc.Fields().ByName(name); fd != nil && fd.Kind() == protoreflect.StringKind {
			return fmt.Sprintf("%s %q", kind, m.Get(fd).String())
		}
	}
	return kind
}

type walker struct {
	subset     Rules
	violations []Violation
}

func (w *walker) fail(path, reason string) {
	if len(w.violations) < maxViolations {
		w.violations = append(w.violations, Violation{Path: path, Reason: reason})
	}
}

// message checks every populated field of m against rule, or against the
// rule of m's type when rule is nil.
func (w *walker) message(m protoreflect.Message, path string, rule *Message) {
	desc := m.Descriptor()
	if opaque[desc.FullName()] {
		return
	}
	if rule == nil {
		rule = w.subset[desc.FullName()]
	}
	if rule == nil {
		w.fail(path, fmt.Sprintf("message type %s not supported", desc.FullName()))
		return
	}
	if unknown := m.GetUnknown(); len(unknown) > 0 {
		w.fail(path, "unknown fields not supported")
	}
	// Range visits fields in an undefined order; report in field-number order.
	var populated []protoreflect.FieldDescriptor
	m.Range(func(fd protoreflect.FieldDescriptor, _ protoreflect.Value) bool {
		populated = append(populated, fd)
		return true
	})
	slices.SortFunc(populated, func(a, b protoreflect.FieldDescriptor) int { return int(a.Number() - b.Number()) })
	for _, fd := range populated {
		fpath := join(path, string(fd.Name()))
		f, ok := rule.fields[fd.Name()]
		if !ok {
			w.fail(fpath, "not supported")
			continue
		}
		w.field(fd, m.Get(fd), fpath, f)
	}
	for _, name := range rule.required {
		fd := desc.Fields().ByName(name)
		if fd != nil && !m.Has(fd) {
			w.fail(join(path, string(name)), "required")
		}
	}
	if rule.check != nil {
		for _, v := range rule.check(m) {
			w.fail(join(path, v.Path), v.Reason)
		}
	}
}

func (w *walker) field(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string, f Field) {
	switch {
	case fd.IsList():
		list := v.List()
		if f.MinItems > 0 && list.Len() < f.MinItems || f.MaxItems > 0 && list.Len() > f.MaxItems {
			w.fail(path, countReason(f, list.Len()))
		}
		for i := range list.Len() {
			w.value(fd, list.Get(i), path+"["+strconv.Itoa(i)+"]", f)
		}
	case fd.IsMap():
		type entry struct {
			key string
			val protoreflect.Value
		}
		var entries []entry
		v.Map().Range(func(k protoreflect.MapKey, val protoreflect.Value) bool {
			entries = append(entries, entry{k.String(), val})
			return true
		})
		slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.key, b.key) })
		for _, e := range entries {
			epath := path + "[" + strconv.Quote(e.key) + "]"
			if f.Keys != nil && !slices.Contains(f.Keys, e.key) {
				w.fail(epath, "not supported")
				continue
			}
			w.value(fd.MapValue(), e.val, epath, f)
		}
	default:
		w.value(fd, v, path, f)
	}
}

// value checks one singular value (a list element or map value included).
func (w *walker) value(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string, f Field) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if f.Values != nil && !slices.Contains(f.Values, v.String()) {
			w.fail(path, fmt.Sprintf("value %q not supported", v.String()))
		}
	case protoreflect.EnumKind:
		if f.Enums != nil && !slices.Contains(f.Enums, v.Enum()) {
			name := strconv.Itoa(int(v.Enum()))
			if ev := fd.Enum().Values().ByNumber(v.Enum()); ev != nil {
				name = string(ev.Name())
			}
			w.fail(path, fmt.Sprintf("value %s not supported", name))
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		m := v.Message()
		if m.Descriptor().FullName() == "google.protobuf.Any" {
			w.any(m, path, f)
			return
		}
		w.message(m, path, f.Only)
	}
}

// any resolves a typed config, checks it is one the field may carry, runs its
// Validate() and walks it.
func (w *walker) any(m protoreflect.Message, path string, f Field) {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		w.fail(path, "malformed Any")
		return
	}
	typeName := a.MessageName()
	if !slices.Contains(f.AnyTypes, typeName) {
		w.fail(path, fmt.Sprintf("typed config %q not supported", a.GetTypeUrl()))
		return
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		w.fail(path, fmt.Sprintf("decode %s: %v", typeName, err))
		return
	}
	if tooDeep(inner.ProtoReflect(), MaxNesting) {
		w.fail(path, fmt.Sprintf("%s: messages nested deeper than %d", typeName, MaxNesting))
		return
	}
	if v, ok := inner.(validator); ok {
		if err := v.Validate(); err != nil {
			w.fail(path, fmt.Sprintf("invalid: %v", err))
			return
		}
	}
	w.message(inner.ProtoReflect(), path, f.Only)
}

func countReason(f Field, n int) string {
	if f.MinItems == f.MaxItems {
		return fmt.Sprintf("exactly %d entries supported, got %d", f.MinItems, n)
	}
	if f.MaxItems > 0 && n > f.MaxItems {
		return fmt.Sprintf("at most %d entries supported, got %d", f.MaxItems, n)
	}
	return fmt.Sprintf("at least %d entries required, got %d", f.MinItems, n)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}
