// Package protofuzz mutates valid protobuf messages under the control of a
// fuzzer's input, for structured fuzz tests of the proxy's xDS handling:
// starting from a valid resource and flipping a few fields through
// protoreflect explores near-valid configurations far better than random
// bytes do. Typed configs (google.protobuf.Any) whose type is registered are
// unpacked, mutated and packed again, so the mutations reach into the
// HttpConnectionManager of a listener or the RBAC config of a filter.
//
// It is meant for tests only; it never panics on any input.
package protofuzz

import (
	"math"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// maxSteps bounds the mutations applied for one input.
const maxSteps = 32

// maxDepth bounds how deep one mutation descends.
const maxDepth = 24

// words are strings the proxy gives a meaning to, mixed with the fuzzer's
// own bytes when a string field is set.
var words = []string{
	"", "*", "/", "//", "/a", "a", "*.example.com", "example.*", "a*b", "[", "(", ")", ".*", "(a)", `\1`, `\`, "$1",
	"%", "%%", "%REQ(x)%", ":path", ":method", ":authority", "host", "Host", ":", "x-a", "127.0.0.1", "::1", "0.0.0.0",
	"fe80::1%eth0", "::ffff:10.0.0.1", "h2", "http/1.1", "tls", "raw_buffer", "meshgate.rbac.deny", "meshgate.rbac.allow",
	"envoy.filters.http.router", "ROOTCA", "default", "meshgate", "envoy.transport_socket_match", "tlsMode", "mtls",
	"envoy.extensions.upstreams.http.v3.HttpProtocolOptions", "\u212a", "/\u212a", "\x00", "\xff", "?", "/a?b=c",
	"spiffe://meshgate.local/ns/default/svc/web", "(?i)a", "a{1000}{1000}", "((((((((((a))))))))))",
	"type.googleapis.com/envoy.config.rbac.v3.RBAC",
	"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
	"type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBACPerRoute",
	"type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
	"type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
	"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
	"type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
	"type.googleapis.com/google.protobuf.Empty",
}

// numbers are integers at the edges of the ranges the proxy checks.
var numbers = []int64{0, 1, 2, -1, 99, 100, 200, 301, 599, 600, 1023, 1024, 65535, 65536, 4096, 4097,
	math.MaxInt32, math.MinInt32, math.MaxUint32, math.MaxInt64, math.MinInt64, 315576000000, 315576000001, 999999999, 1000000000}

// source reads the fuzzer's input as a stream of choices; exhausted, it
// reads zeros.
type source struct {
	data []byte
}

func (s *source) empty() bool { return len(s.data) == 0 }

func (s *source) byte() byte {
	if len(s.data) == 0 {
		return 0
	}
	b := s.data[0]
	s.data = s.data[1:]
	return b
}

// pick returns a number in [0, n); n must be positive.
func (s *source) pick(n int) int {
	if n <= 1 {
		return 0
	}
	v := int(s.byte())
	if n > 256 {
		v = v<<8 | int(s.byte())
	}
	return v % n
}

func (s *source) number() int64 {
	if b := s.byte(); b < 128 {
		return numbers[int(b)%len(numbers)]
	}
	var v int64
	for range 8 {
		v = v<<8 | int64(s.byte())
	}
	return v
}

func (s *source) bytes() []byte {
	n := int(s.byte() % 32)
	n = min(n, len(s.data))
	b := append([]byte(nil), s.data[:n]...)
	s.data = s.data[n:]
	return b
}

func (s *source) string() string {
	switch b := s.byte(); {
	case b < 160:
		return words[int(b)%len(words)]
	case b < 192:
		return words[s.pick(len(words))] + string(s.bytes())
	default:
		return string(s.bytes())
	}
}

// Mutate applies up to maxSteps mutations chosen by data to m, in place.
func Mutate(m proto.Message, data []byte) {
	s := &source{data: data}
	msg := m.ProtoReflect()
	for step := 0; step < maxSteps && !s.empty(); step++ {
		mutate(msg, s, 0)
	}
}

// mutate changes one field of m, or of a message below it.
func mutate(m protoreflect.Message, s *source, depth int) {
	if depth > maxDepth {
		return
	}
	if m.Descriptor().FullName() == "google.protobuf.Any" && s.byte()%4 != 0 {
		mutateAny(m, s, depth)
		return
	}
	fields := m.Descriptor().Fields()
	if fields.Len() == 0 {
		return
	}
	fd := fields.Get(s.pick(fields.Len()))
	switch op := s.byte() % 8; {
	case op == 0:
		m.Clear(fd)
	case fd.IsList():
		mutateList(m, fd, s, depth)
	case fd.IsMap():
		mutateMap(m, fd, s, depth)
	case fd.Message() != nil:
		if op == 1 {
			m.Set(fd, protoreflect.ValueOfMessage(m.NewField(fd).Message())) // present and empty
			return
		}
		mutate(m.Mutable(fd).Message(), s, depth+1)
	default:
		m.Set(fd, scalar(fd, s))
	}
}

func mutateList(m protoreflect.Message, fd protoreflect.FieldDescriptor, s *source, depth int) {
	list := m.Mutable(fd).List()
	switch op := s.byte() % 4; {
	case op == 0 && list.Len() > 0: // remove one
		i := s.pick(list.Len())
		for j := i; j+1 < list.Len(); j++ {
			list.Set(j, list.Get(j+1))
		}
		list.Truncate(list.Len() - 1)
	case op == 1 && list.Len() > 0 && fd.Message() != nil: // duplicate one
		src := list.Get(s.pick(list.Len())).Message().Interface()
		list.Append(protoreflect.ValueOfMessage(proto.Clone(src).ProtoReflect()))
	case op == 2 || list.Len() == 0: // append a new one
		if fd.Message() != nil {
			v := list.NewElement()
			mutate(v.Message(), s, depth+1)
			list.Append(v)
			return
		}
		list.Append(scalar(fd, s))
	default: // change one
		i := s.pick(list.Len())
		if fd.Message() != nil {
			mutate(list.Get(i).Message(), s, depth+1)
			return
		}
		list.Set(i, scalar(fd, s))
	}
}

func mutateMap(m protoreflect.Message, fd protoreflect.FieldDescriptor, s *source, depth int) {
	mp := m.Mutable(fd).Map()
	var keys []protoreflect.MapKey
	mp.Range(func(k protoreflect.MapKey, _ protoreflect.Value) bool {
		keys = append(keys, k)
		return true
	})
	switch op := s.byte() % 3; {
	case op == 0 && len(keys) > 0:
		mp.Clear(keys[s.pick(len(keys))])
	case op == 1 && len(keys) > 0 && fd.MapValue().Message() != nil:
		mutate(mp.Mutable(keys[s.pick(len(keys))]).Message(), s, depth+1)
	default:
		key := scalar(fd.MapKey(), s).MapKey()
		if fd.MapValue().Message() != nil {
			v := mp.NewValue()
			mutate(v.Message(), s, depth+1)
			mp.Set(key, v)
			return
		}
		mp.Set(key, scalar(fd.MapValue(), s))
	}
}

// mutateAny unpacks a typed config, mutates it and packs it again.
func mutateAny(m protoreflect.Message, s *source, depth int) {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		return
	}
	mutate(inner.ProtoReflect(), s, depth+1)
	value, err := proto.MarshalOptions{Deterministic: true}.Marshal(inner)
	if err != nil {
		return
	}
	a.Value = value
}

// scalar is a new value for a non-message field.
func scalar(fd protoreflect.FieldDescriptor, s *source) protoreflect.Value {
	switch fd.Kind() {
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(s.byte()%2 == 1)
	case protoreflect.EnumKind:
		values := fd.Enum().Values()
		if b := s.byte(); b < 240 && values.Len() > 0 {
			return protoreflect.ValueOfEnum(values.Get(int(b) % values.Len()).Number())
		}
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(s.number()))
	case protoreflect.Int32Kind, protoreflect.Sint32Kind, protoreflect.Sfixed32Kind:
		return protoreflect.ValueOfInt32(int32(s.number()))
	case protoreflect.Int64Kind, protoreflect.Sint64Kind, protoreflect.Sfixed64Kind:
		return protoreflect.ValueOfInt64(s.number())
	case protoreflect.Uint32Kind, protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(s.number()))
	case protoreflect.Uint64Kind, protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(s.number()))
	case protoreflect.FloatKind:
		return protoreflect.ValueOfFloat32(float32(s.number()))
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(s.number()))
	case protoreflect.StringKind:
		return protoreflect.ValueOfString(s.string())
	case protoreflect.BytesKind:
		if s.byte()%2 == 0 {
			return protoreflect.ValueOfBytes([]byte(s.string()))
		}
		return protoreflect.ValueOfBytes(s.bytes())
	}
	return fd.Default()
}
