// Package headers compiles Envoy's header mutations (a header removal, or a
// HeaderValueOption added with its append_action) into an ordered List
// applied to an http.Header. The router uses it for a route's
// request/response_headers_to_add/remove, the header_mutation filter for its
// mutations: both behave as Envoy's, in the subset of docs/xds.md.
//
// A compiled List is immutable and safe for concurrent use; Apply allocates
// only the values it adds.
package headers

import (
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
)

// Action mirrors envoy.config.core.v3.HeaderValueOption.HeaderAppendAction.
type Action uint8

const (
	// AppendIfExistsOrAdd adds the value after those already present.
	AppendIfExistsOrAdd Action = iota
	// AddIfAbsent adds the value only when the header is absent.
	AddIfAbsent
	// OverwriteIfExistsOrAdd replaces every value with this one.
	OverwriteIfExistsOrAdd
	// OverwriteIfExists replaces every value with this one, only when the
	// header is present.
	OverwriteIfExists
)

// op is one compiled mutation.
type op struct {
	remove bool
	key    string // canonical
	value  string
	action Action
}

// List is an ordered list of header removals and additions. The zero value
// changes nothing.
type List struct {
	ops []op
}

// Remove appends the removal of every value of name (already checked).
func (l *List) Remove(name string) {
	l.ops = append(l.ops, op{remove: true, key: textproto.CanonicalMIMEHeaderKey(name)})
}

// Add appends the addition of a compiled option; a skipped option (an empty
// value, which Envoy drops) adds nothing.
func (l *List) Add(o Option) {
	if o.Skip {
		return
	}
	l.ops = append(l.ops, op{key: o.Key, value: o.Value, action: o.Action})
}

// Append appends the mutations of other, applied after l's.
func (l *List) Append(other List) { l.ops = append(l.ops, other.ops...) }

// Empty reports whether the list changes nothing.
func (l *List) Empty() bool { return len(l.ops) == 0 }

// Apply applies the mutations to h, in order.
func (l *List) Apply(h http.Header) {
	for i := range l.ops {
		o := &l.ops[i]
		if o.remove {
			delete(h, o.key)
			continue
		}
		_, exists := h[o.key]
		switch o.action {
		case AppendIfExistsOrAdd:
			h[o.key] = append(h[o.key], o.value)
		case AddIfAbsent:
			if !exists {
				h[o.key] = []string{o.value}
			}
		case OverwriteIfExistsOrAdd:
			h[o.key] = []string{o.value}
		case OverwriteIfExists:
			if exists {
				h[o.key] = []string{o.value}
			}
		}
	}
}

// Option is a compiled HeaderValueOption.
type Option struct {
	Key    string // canonical
	Value  string // literal, formatter escapes resolved
	Action Action
	// Skip is set for an empty value: Envoy drops it (keep_empty_value
	// false), so adding it changes nothing.
	Skip bool
}

// CompileOption compiles opt for a request (request true) or a response.
// check, when not nil, refuses header names beyond CheckName's rules. Errors
// name the field relative to opt ("header.key: ...").
func CompileOption(opt *corev3.HeaderValueOption, request bool, check func(name string) error) (Option, error) {
	key := opt.GetHeader().GetKey()
	if err := CheckName(key, request); err != nil {
		return Option{}, fmt.Errorf("header.key: %w", err)
	}
	if check != nil {
		if err := check(key); err != nil {
			return Option{}, fmt.Errorf("header.key: %w", err)
		}
	}
	//lint:ignore SA1019 the deprecated field is refused (NACKed), not used
	if opt.GetAppend() != nil {
		return Option{}, errors.New("append: not supported, use append_action")
	}
	value, err := LiteralValue(opt.GetHeader().GetValue())
	if err != nil {
		return Option{}, fmt.Errorf("header.value: %w", err)
	}
	o := Option{Key: textproto.CanonicalMIMEHeaderKey(key), Value: value, Skip: value == ""}
	switch opt.GetAppendAction() {
	case corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD:
		o.Action = AppendIfExistsOrAdd
	case corev3.HeaderValueOption_ADD_IF_ABSENT:
		o.Action = AddIfAbsent
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD:
		o.Action = OverwriteIfExistsOrAdd
	case corev3.HeaderValueOption_OVERWRITE_IF_EXISTS:
		o.Action = OverwriteIfExists
	default:
		return Option{}, fmt.Errorf("append_action: %v not supported", opt.GetAppendAction())
	}
	return o, nil
}

// CheckName rejects what Envoy refuses to add or remove: empty and
// pseudo-header names, and Host on requests.
func CheckName(name string, request bool) error {
	switch {
	case name == "":
		return errors.New("empty header name")
	case strings.HasPrefix(name, ":"):
		return fmt.Errorf("pseudo-header %q cannot be modified", name)
	case request && strings.EqualFold(name, "host"):
		return errors.New(`"host" cannot be modified (use host_rewrite_literal)`)
	case strings.ContainsAny(name, " \t\r\n:"):
		return fmt.Errorf("%q is not a valid header name", name)
	}
	return nil
}

// LiteralValue resolves Envoy's formatter syntax in a header value: "%%" is
// a literal "%"; any other %COMMAND% is not supported.
func LiteralValue(v string) (string, error) {
	if !strings.Contains(v, "%") {
		return v, nil
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if v[i] != '%' {
			b.WriteByte(v[i])
			continue
		}
		if i+1 < len(v) && v[i+1] == '%' {
			b.WriteByte('%')
			i++
			continue
		}
		return "", fmt.Errorf("%q: formatter commands (%%...%%) are not supported; write %%%% for a literal %%", v)
	}
	return b.String(), nil
}
