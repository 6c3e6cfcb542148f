package xds

import (
	"fmt"
	"sync"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/encoding"
	protoenc "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// Field numbers of envoy.service.discovery.v3.DiscoveryResponse and
// google.protobuf.Any that the codec writes by hand.
const (
	responseResourcesField protowire.Number = 2
	anyTypeURLField        protowire.Number = 1
	anyValueField          protowire.Number = 2
)

// maxPrefixes bounds the codec's cache of resource prefixes; past it,
// prefixes are built per response.
const maxPrefixes = 1 << 14

// sharingCodec is the gRPC codec of the xDS server. It marshals a
// DiscoveryResponse without copying its resources: the encoded message is a
// list of buffers that reference each resource's Any value, which the cache
// marshaled once per model and shares between every stream. So a response
// queued for a slow reader holds a few bytes of framing per resource, not a
// copy of the whole configuration (2000 streams of 300 KB each were 600 MB
// of gRPC send buffers). The bytes on the wire are the ones proto.Marshal
// writes. Every other message goes to gRPC's proto codec.
//
// The shared values are immutable: the cache never changes an encoded
// resource, and gRPC's contract forbids changing a message after SendMsg.
type sharingCodec struct {
	fallback encoding.CodecV2

	mu sync.RWMutex
	// prefixes are the bytes before an Any's value in a response (the
	// resources tag and length, the type URL field, the value tag and
	// length), by type URL and value length: shared between responses.
	prefixes map[prefixKey][]byte
}

type prefixKey struct {
	typeURL string
	length  int
}

var _ encoding.CodecV2 = (*sharingCodec)(nil)

func newSharingCodec() *sharingCodec {
	return &sharingCodec{fallback: encoding.GetCodecV2(protoenc.Name), prefixes: map[prefixKey][]byte{}}
}

// Name is the content subtype of the codec: it speaks protobuf.
func (c *sharingCodec) Name() string { return protoenc.Name }

// Unmarshal decodes with gRPC's proto codec.
func (c *sharingCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.fallback.Unmarshal(data, v)
}

// Marshal encodes v; see sharingCodec.
func (c *sharingCodec) Marshal(v any) (mem.BufferSlice, error) {
	resp, ok := v.(*discoveryv3.DiscoveryResponse)
	if !ok || len(resp.GetResources()) == 0 {
		return c.fallback.Marshal(v)
	}
	// The fields before the resources (version_info), then the resources,
	// then the others: proto.Marshal's field order.
	var before, after discoveryv3.DiscoveryResponse
	resp.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, val protoreflect.Value) bool {
		switch {
		case fd.Number() == responseResourcesField:
		case fd.Number() < responseResourcesField:
			before.ProtoReflect().Set(fd, val)
		default:
			after.ProtoReflect().Set(fd, val)
		}
		return true
	})
	head, err := proto.Marshal(&before)
	if err != nil {
		return nil, fmt.Errorf("marshal discovery response: %w", err)
	}
	tail, err := proto.Marshal(&after)
	if err != nil {
		return nil, fmt.Errorf("marshal discovery response: %w", err)
	}
	out := make(mem.BufferSlice, 0, 2*len(resp.GetResources())+2)
	if len(head) > 0 {
		out = append(out, mem.SliceBuffer(head))
	}
	for _, a := range resp.GetResources() {
		out = append(out, mem.SliceBuffer(c.prefix(a.GetTypeUrl(), len(a.GetValue()))))
		if len(a.GetValue()) > 0 {
			out = append(out, mem.SliceBuffer(a.GetValue()))
		}
	}
	if len(tail) > 0 {
		out = append(out, mem.SliceBuffer(tail))
	}
	return out, nil
}

// prefix returns the encoding of a resources entry up to its Any's value.
func (c *sharingCodec) prefix(typeURL string, length int) []byte {
	key := prefixKey{typeURL: typeURL, length: length}
	c.mu.RLock()
	p, ok := c.prefixes[key]
	c.mu.RUnlock()
	if ok {
		return p
	}
	p = anyPrefix(typeURL, length)
	c.mu.Lock()
	if len(c.prefixes) < maxPrefixes {
		c.prefixes[key] = p
	}
	c.mu.Unlock()
	return p
}

// anyPrefix encodes a resources field holding an Any of typeURL up to its
// value of length bytes, as proto.Marshal does (empty fields omitted).
func anyPrefix(typeURL string, length int) []byte {
	size := 0
	if typeURL != "" {
		size += protowire.SizeTag(anyTypeURLField) + protowire.SizeBytes(len(typeURL))
	}
	if length > 0 {
		size += protowire.SizeTag(anyValueField) + protowire.SizeBytes(length)
	}
	p := protowire.AppendTag(nil, responseResourcesField, protowire.BytesType)
	p = protowire.AppendVarint(p, uint64(size))
	if typeURL != "" {
		p = protowire.AppendTag(p, anyTypeURLField, protowire.BytesType)
		p = protowire.AppendString(p, typeURL)
	}
	if length > 0 {
		p = protowire.AppendTag(p, anyValueField, protowire.BytesType)
		p = protowire.AppendVarint(p, uint64(length))
	}
	return p
}
