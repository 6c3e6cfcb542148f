package policy

import (
	"encoding"
	"encoding/json"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Limits that keep a hostile document from exhausting memory or the stack.
const (
	// maxDocumentNodes bounds the YAML nodes visited per document, counting
	// every expansion of an alias (so "billion laughs" documents stop early).
	maxDocumentNodes = 100_000
	// maxDocumentDepth bounds the nesting of mappings and lists.
	maxDocumentDepth = 64
)

// fieldInfo is one JSON-visible field of a struct type.
type fieldInfo struct {
	name string
	typ  reflect.Type
}

// nodeDecoder converts one YAML document into a JSON-compatible value while
// checking it against a Go type: it reports unknown fields and wrongly typed
// scalars with their path and line, and records the line of every field.
type nodeDecoder struct {
	report func(line int, field, message string)
	lines  map[string]int
	fields map[reflect.Type]map[string]fieldInfo
	budget int
	// dropped lists the paths of values left out because they were invalid.
	dropped []string
	// exhausted is set once the node budget ran out, so it is reported once.
	exhausted bool
}

func newNodeDecoder(report func(line int, field, message string)) *nodeDecoder {
	return &nodeDecoder{
		report: report,
		lines:  make(map[string]int),
		fields: make(map[reflect.Type]map[string]fieldInfo),
		budget: maxDocumentNodes,
	}
}

func (d *nodeDecoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.report(n.Line, path, fmt.Sprintf(format, args...))
}

func (d *nodeDecoder) record(path string, line int) {
	if path == "" {
		return
	}
	if _, ok := d.lines[path]; !ok {
		d.lines[path] = line
	}
}

// enter resolves aliases and charges the node budget. It returns nil when
// the node must not be visited.
func (d *nodeDecoder) enter(n *yaml.Node, path string, depth int) *yaml.Node {
	for n != nil && n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n == nil {
		return nil
	}
	d.budget--
	if d.budget < 0 {
		if !d.exhausted {
			d.exhausted = true
			d.errorf(n, path, "document too large (more than %d nodes, counting alias expansions)", maxDocumentNodes)
		}
		return nil
	}
	if depth > maxDocumentDepth {
		d.errorf(n, path, "nested more than %d levels deep", maxDocumentDepth)
		return nil
	}
	return n
}

// decode converts n into a value json.Unmarshal accepts for type t. ok is
// false when the value is null or invalid and must be left out; the path of
// an invalid value is added to dropped.
func (d *nodeDecoder) decode(n *yaml.Node, t reflect.Type, path string, depth int) (v any, ok bool) {
	v, ok = d.decodeValue(n, t, path, depth)
	if !ok {
		resolved := n
		for resolved != nil && resolved.Kind == yaml.AliasNode {
			resolved = resolved.Alias
		}
		if resolved == nil || !isNull(resolved) {
			d.dropped = append(d.dropped, path)
		}
	}
	return v, ok
}

func (d *nodeDecoder) decodeValue(n *yaml.Node, t reflect.Type, path string, depth int) (v any, ok bool) {
	if n = d.enter(n, path, depth); n == nil {
		return nil, false
	}
	d.record(path, n.Line)
	if isNull(n) {
		return nil, false
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if hasCustomUnmarshal(t) {
		return d.decodeCustom(n, t, path, depth)
	}
	switch t.Kind() {
	case reflect.Struct:
		return d.decodeStruct(n, t, path, depth)
	case reflect.Map:
		return d.decodeMap(n, t, path, depth)
	case reflect.Slice, reflect.Array:
		if t.Elem().Kind() == reflect.Uint8 {
			return d.decodeString(n, path)
		}
		return d.decodeList(n, t.Elem(), path, depth)
	case reflect.String:
		return d.decodeString(n, path)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.errorf(n, path, "expected true or false, got %s", describe(n))
			return nil, false
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.errorf(n, path, "expected true or false, got %s", describe(n))
			return nil, false
		}
		return b, true
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.errorf(n, path, "expected an integer, got %s", describe(n))
			return nil, false
		}
		var i int64
		if err := n.Decode(&i); err != nil || reflect.Zero(t).OverflowInt(i) {
			d.errorf(n, path, "integer %s is out of range", n.Value)
			return nil, false
		}
		return i, true
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.errorf(n, path, "expected an integer, got %s", describe(n))
			return nil, false
		}
		var u uint64
		if err := n.Decode(&u); err != nil || reflect.Zero(t).OverflowUint(u) {
			d.errorf(n, path, "integer %s is out of range", n.Value)
			return nil, false
		}
		return u, true
	case reflect.Float32, reflect.Float64:
		if n.Kind != yaml.ScalarNode || (n.ShortTag() != "!!int" && n.ShortTag() != "!!float") {
			d.errorf(n, path, "expected a number, got %s", describe(n))
			return nil, false
		}
		return d.decodeFloat(n, path)
	case reflect.Interface:
		return d.decodeUntyped(n, path, depth)
	default:
		d.errorf(n, path, "field of Go type %s cannot be set from YAML", t)
		return nil, false
	}
}

func (d *nodeDecoder) decodeString(n *yaml.Node, path string) (any, bool) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "expected a string, got %s", describe(n))
		return nil, false
	}
	// Numbers and booleans are taken as their text: "port: 8080" where a
	// port name or number is expected is common and unambiguous.
	return n.Value, true
}

func (d *nodeDecoder) decodeFloat(n *yaml.Node, path string) (any, bool) {
	var f float64
	if err := n.Decode(&f); err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		d.errorf(n, path, "expected a finite number, got %s", describe(n))
		return nil, false
	}
	return f, true
}

// decodeCustom handles types with their own JSON or text decoding (such as
// metav1.Time or metav1.Duration): the node is converted without a schema and
// the type's own decoder decides whether the value is valid.
func (d *nodeDecoder) decodeCustom(n *yaml.Node, t reflect.Type, path string, depth int) (any, bool) {
	v, ok := d.decodeUntyped(n, path, depth)
	if !ok {
		return nil, false
	}
	raw, err := json.Marshal(v)
	if err != nil {
		d.errorf(n, path, "invalid value: %v", err)
		return nil, false
	}
	if err := json.Unmarshal(raw, reflect.New(t).Interface()); err != nil {
		d.errorf(n, path, "invalid value %s: %v", describe(n), err)
		return nil, false
	}
	return v, true
}

func (d *nodeDecoder) decodeStruct(n *yaml.Node, t reflect.Type, path string, depth int) (any, bool) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", describe(n))
		return nil, false
	}
	fields := d.fieldsOf(t)
	out := make(map[string]any, len(n.Content)/2)
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, ok := d.mappingKey(n.Content[i], path, depth)
		if !ok {
			continue
		}
		keyNode := n.Content[i]
		child := joinPath(path, key)
		if first, dup := seen[key]; dup {
			d.errorf(keyNode, child, "duplicate field (first at line %d)", first)
			continue
		}
		seen[key] = keyNode.Line
		f, known := fields[key]
		if !known {
			d.errorf(keyNode, child, "%s", unknownFieldMessage(key, path, fields))
			continue
		}
		d.record(child, keyNode.Line)
		if v, ok := d.decode(n.Content[i+1], f.typ, child, depth+1); ok {
			out[key] = v
		}
	}
	return out, true
}

func (d *nodeDecoder) decodeMap(n *yaml.Node, t reflect.Type, path string, depth int) (any, bool) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "expected a mapping, got %s", describe(n))
		return nil, false
	}
	keyKind := t.Key().Kind()
	out := make(map[string]any, len(n.Content)/2)
	seen := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, ok := d.mappingKey(n.Content[i], path, depth)
		if !ok {
			continue
		}
		keyNode := n.Content[i]
		child := mapKeyPath(path, key)
		if first, dup := seen[key]; dup {
			d.errorf(keyNode, child, "duplicate key (first at line %d)", first)
			continue
		}
		seen[key] = keyNode.Line
		switch keyKind {
		case reflect.String:
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			if _, err := strconv.ParseInt(key, 10, t.Key().Bits()); err != nil {
				d.errorf(keyNode, child, "key %q is not an integer", key)
				continue
			}
		default:
			d.errorf(keyNode, child, "map keys of Go type %s cannot be set from YAML", t.Key())
			continue
		}
		d.record(child, keyNode.Line)
		if v, ok := d.decode(n.Content[i+1], t.Elem(), child, depth+1); ok {
			out[key] = v
		}
	}
	return out, true
}

func (d *nodeDecoder) decodeList(n *yaml.Node, elem reflect.Type, path string, depth int) (any, bool) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "expected a list, got %s", describe(n))
		return nil, false
	}
	out := make([]any, 0, len(n.Content))
	for i, item := range n.Content {
		v, ok := d.decode(item, elem, fmt.Sprintf("%s[%d]", path, i), depth+1)
		if !ok {
			v = nil
		}
		out = append(out, v)
	}
	return out, true
}

// decodeUntyped converts n without a schema.
func (d *nodeDecoder) decodeUntyped(n *yaml.Node, path string, depth int) (any, bool) {
	switch n.Kind {
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			key, ok := d.mappingKey(n.Content[i], path, depth)
			if !ok {
				continue
			}
			child := mapKeyPath(path, key)
			if _, dup := out[key]; dup {
				d.errorf(n.Content[i], child, "duplicate key")
				continue
			}
			val := d.enter(n.Content[i+1], child, depth+1)
			if val == nil {
				continue
			}
			d.record(child, n.Content[i].Line)
			if v, ok := d.decodeUntyped(val, child, depth+1); ok {
				out[key] = v
			} else {
				out[key] = nil
			}
		}
		return out, true
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, item := range n.Content {
			child := fmt.Sprintf("%s[%d]", path, i)
			item = d.enter(item, child, depth+1)
			if item == nil {
				out = append(out, nil)
				continue
			}
			d.record(child, item.Line)
			v, _ := d.decodeUntyped(item, child, depth+1)
			out = append(out, v)
		}
		return out, true
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, true
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err == nil {
				return b, true
			}
		case "!!int":
			var i int64
			if err := n.Decode(&i); err == nil {
				return i, true
			}
			return d.decodeFloat(n, path)
		case "!!float":
			return d.decodeFloat(n, path)
		}
		return n.Value, true
	default:
		d.errorf(n, path, "unexpected YAML node")
		return nil, false
	}
}

// mappingKey returns the text of a mapping key, reporting keys that are not
// plain strings.
func (d *nodeDecoder) mappingKey(k *yaml.Node, path string, depth int) (string, bool) {
	if k = d.enter(k, path, depth+1); k == nil {
		return "", false
	}
	if k.Kind != yaml.ScalarNode {
		d.errorf(k, path, "mapping keys must be strings, got %s", describe(k))
		return "", false
	}
	if k.ShortTag() == "!!merge" {
		d.errorf(k, path, "YAML merge keys (<<) are not supported")
		d.dropped = append(d.dropped, path)
		return "", false
	}
	return k.Value, true
}

// fieldsOf lists the JSON-visible fields of a struct type the way
// encoding/json sees them, with embedded structs flattened.
func (d *nodeDecoder) fieldsOf(t reflect.Type) map[string]fieldInfo {
	if f, ok := d.fields[t]; ok {
		return f
	}
	out := make(map[string]fieldInfo)
	collectFields(t, out, 0)
	d.fields[t] = out
	return out
}

func collectFields(t reflect.Type, out map[string]fieldInfo, depth int) {
	if depth > 10 {
		return
	}
	var embedded []reflect.Type
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if sf.Anonymous && name == "" {
			ft := sf.Type
			for ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !sf.IsExported() {
			continue
		}
		if name == "" {
			name = sf.Name
		}
		out[name] = fieldInfo{name: name, typ: sf.Type}
	}
	// Fields of the outer struct win over promoted ones, as in encoding/json.
	for _, et := range embedded {
		inner := make(map[string]fieldInfo)
		collectFields(et, inner, depth+1)
		for k, v := range inner {
			if _, ok := out[k]; !ok {
				out[k] = v
			}
		}
	}
}

func hasCustomUnmarshal(t reflect.Type) bool {
	jsonType := reflect.TypeFor[json.Unmarshaler]()
	textType := reflect.TypeFor[encoding.TextUnmarshaler]()
	pt := reflect.PointerTo(t)
	return t.Implements(jsonType) || pt.Implements(jsonType) ||
		t.Implements(textType) || pt.Implements(textType)
}

func unknownFieldMessage(key, path string, fields map[string]fieldInfo) string {
	if path == "" && key == "status" {
		return `unknown field "status": status is reported by the control plane, not written in policy files`
	}
	for name := range fields {
		if strings.EqualFold(name, key) {
			return fmt.Sprintf("unknown field %q (did you mean %q?)", key, name)
		}
	}
	return fmt.Sprintf("unknown field %q", key)
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// describe names a node's kind and value for error messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		v := n.Value
		if len(v) > 40 {
			v = v[:40] + "..."
		}
		switch n.ShortTag() {
		case "!!int":
			return "integer " + v
		case "!!float":
			return "number " + v
		case "!!bool":
			return "boolean " + v
		case "!!null":
			return "null"
		default:
			return "string " + strconv.Quote(v)
		}
	default:
		return "an unexpected YAML node"
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mapKeyPath appends a map key to a path: ".key" for identifier-like keys,
// `["key"]` otherwise (label keys such as "app.kubernetes.io/name").
func mapKeyPath(path, key string) string {
	simple := key != ""
	for i := 0; i < len(key); i++ {
		c := key[i]
		if !(c == '_' || c == '-' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			simple = false
			break
		}
	}
	if simple {
		return joinPath(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}
