// Package grpcweb is Envoy's gRPC-Web HTTP filter
// (envoy.extensions.filters.http.grpc_web.v3.GrpcWeb) for the meshgate
// proxy: it translates a gRPC-Web request, as a browser sends it over
// HTTP/1.1 or HTTP/2, into a gRPC request for the upstream, and the gRPC
// response back into gRPC-Web (docs/xds.md "gRPC-Web", docs/edge.md).
//
// As Envoy's filter:
//   - a request is gRPC-Web when its Content-Type is exactly
//     application/grpc-web, application/grpc-web+proto,
//     application/grpc-web-text or application/grpc-web-text+proto; any
//     other request passes untouched, at the cost of one header lookup;
//   - the request goes upstream as application/grpc with "te: trailers",
//     "grpc-accept-encoding: identity" unless it has one, and no
//     Content-Length; a -text body is base64 (in groups of four characters,
//     padding allowed at the end of each message) and is decoded as it
//     streams; a body that is not base64 ends the request (400 when nothing
//     was answered yet);
//   - a gRPC response is answered with Content-Type
//     application/grpc-web+proto (application/grpc-web-text+proto when the
//     request's Accept is a -text type: each gRPC frame is then base64,
//     padded, encoded as it streams), its body frames as they come, and its
//     trailers as a final frame (flag 0x80, "name:value\r\n" lines); a
//     trailers-only response (grpc-status in the headers) keeps them there;
//   - a response that is not gRPC (an error page, a local reply of the
//     proxy or of a filter after this one) is answered with its HTTP status,
//     grpc-status mapped from it, grpc-message its first 16 KiB
//     percent-encoded, and no body.
//
// CORS headers are not this filter's: as with Envoy, a browser calling
// another origin needs the route's CORS policy, exposing grpc-status and
// grpc-message.
//
// The filter has no configuration and no per-route config; it is put first
// in the chain, so that it sees every response the others answer.
package grpcweb

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"

	grpcwebv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/grpc_web/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/router"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// ConfigType is the filter's config message.
const ConfigType protoreflect.FullName = "envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"

// Content types (gRPC's PROTOCOL-WEB.md).
const (
	contentTypeGRPC         = "application/grpc"
	contentTypeWeb          = "application/grpc-web"
	contentTypeWebProto     = "application/grpc-web+proto"
	contentTypeWebText      = "application/grpc-web-text"
	contentTypeWebTextProto = "application/grpc-web-text+proto"
)

// trailerFlag marks a gRPC-Web frame holding the trailers.
const trailerFlag = 0x80

// maxMessageBytes bounds the grpc-message made of a non-gRPC response's
// body (Envoy's MAX_BUFFERED_PLAINTEXT_LENGTH).
const maxMessageBytes = 16 << 10

// Factory describes the gRPC-Web filter to the registry.
func Factory() httpfilter.Factory {
	return httpfilter.Factory{
		ConfigType: ConfigType,
		Rules:      xdscheck.Rules{ConfigType: xdscheck.Allow()},
		New:        newFilter,
	}
}

type filter struct{}

func newFilter(_ string, config proto.Message, _ httpfilter.Env) (httpfilter.Filter, error) {
	if _, ok := config.(*grpcwebv3.GrpcWeb); !ok {
		return nil, fmt.Errorf("want a GrpcWeb, got %T", config)
	}
	return filter{}, nil
}

// Wrap translates the gRPC-Web requests and lets every other one through.
func (filter) Wrap(next httpfilter.Handler) httpfilter.Handler {
	return httpfilter.HandlerFunc(func(w http.ResponseWriter, r *http.Request, rt *router.Route) {
		ct := r.Header["Content-Type"]
		if len(ct) != 1 {
			next.ServeHTTP(w, r, rt)
			return
		}
		var textRequest bool
		switch ct[0] {
		case contentTypeWeb, contentTypeWebProto:
		case contentTypeWebText, contentTypeWebTextProto:
			textRequest = true
		default:
			next.ServeHTTP(w, r, rt)
			return
		}
		h := r.Header
		delete(h, "Content-Length")
		r.ContentLength = -1
		h["Content-Type"] = []string{contentTypeGRPC}
		h["Te"] = []string{"trailers"}
		if len(h["Grpc-Accept-Encoding"]) == 0 {
			h["Grpc-Accept-Encoding"] = []string{"identity"}
		}
		var decoder *textDecoder
		if textRequest && r.Body != nil && r.Body != http.NoBody {
			decoder = &textDecoder{src: r.Body}
			r.Body = decoder
		}
		accept := h.Get("Accept")
		rw := &responseWriter{w: w, text: accept == contentTypeWebText || accept == contentTypeWebTextProto}
		next.ServeHTTP(rw, r, rt)
		if decoder != nil && decoder.err != nil && !rw.wroteHeader {
			// Whatever was answered is to a broken request: Envoy's local
			// reply instead, translated as every non-gRPC response is.
			rw.status = 0
			rw.message.Reset()
			httpfilter.LocalReply(rw, rt, http.StatusBadRequest, bodyBadBase64)
		}
		rw.finish()
	})
}

// bodyBadBase64 is Envoy's local reply to a -text body that is not base64.
const bodyBadBase64 = "Bad gRPC-web request, invalid base64 data."

// errBadBase64 ends a -text request body that is not base64.
var errBadBase64 = errors.New("grpc-web: request body is not base64")

// textDecoder decodes an application/grpc-web-text body as it streams:
// each group of four characters is decoded alone (a message is padded
// separately from the next).
type textDecoder struct {
	src     io.ReadCloser
	pending []byte // read, not yet decoded (less than four characters)
	out     []byte // decoded, not yet returned
	buf     [4096]byte
	err     error
	eof     bool
}

func (d *textDecoder) Read(p []byte) (int, error) {
	for len(d.out) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		if d.eof {
			if len(d.pending) != 0 {
				d.err = errBadBase64
				return 0, d.err
			}
			return 0, io.EOF
		}
		n, err := d.src.Read(d.buf[:])
		d.pending = append(d.pending, d.buf[:n]...)
		if err == io.EOF {
			d.eof = true
		} else if err != nil {
			return 0, err
		}
		groups := len(d.pending) / 4 * 4
		for i := 0; i < groups; i += 4 {
			var dst [3]byte
			m, derr := base64.StdEncoding.Decode(dst[:], d.pending[i:i+4])
			if derr != nil {
				d.err = errBadBase64
				return 0, d.err
			}
			d.out = append(d.out, dst[:m]...)
		}
		d.pending = append(d.pending[:0], d.pending[groups:]...)
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	if len(d.out) == 0 {
		d.out = d.out[:0:0]
	}
	return n, nil
}

func (d *textDecoder) Close() error { return d.src.Close() }

// responseWriter turns the gRPC response written to it into gRPC-Web.
type responseWriter struct {
	w    http.ResponseWriter
	text bool // answer application/grpc-web-text+proto
	// status is the response's, held when it is not gRPC (written by
	// finish); 0 when not written or passed through.
	status      int
	wroteHeader bool
	grpc        bool         // the response is gRPC: body frames pass, trailers follow
	message     bytes.Buffer // a non-gRPC response's body, up to maxMessageBytes
	enc         frameEncoder // -text: the body's frames, base64
}

func (rw *responseWriter) Header() http.Header { return rw.w.Header() }

func (rw *responseWriter) WriteHeader(status int) {
	if rw.wroteHeader || rw.status != 0 {
		return
	}
	if status < 200 {
		rw.w.WriteHeader(status)
		return
	}
	h := rw.w.Header()
	rw.grpc = status == http.StatusOK && isGRPC(h.Get("Content-Type"))
	delete(h, "Content-Length")
	if rw.text {
		h["Content-Type"] = []string{contentTypeWebTextProto}
	} else {
		h["Content-Type"] = []string{contentTypeWebProto}
	}
	if !rw.grpc && len(h["Grpc-Status"]) == 0 {
		rw.status = status // answered by finish, with the body as grpc-message
		return
	}
	rw.grpc = true
	rw.wroteHeader = true
	rw.w.WriteHeader(status)
}

func (rw *responseWriter) Write(b []byte) (int, error) {
	if !rw.wroteHeader && rw.status == 0 {
		rw.WriteHeader(http.StatusOK)
	}
	if rw.status != 0 {
		if room := maxMessageBytes - rw.message.Len(); room > 0 {
			rw.message.Write(b[:min(room, len(b))])
		}
		return len(b), nil
	}
	if !rw.text {
		return rw.w.Write(b)
	}
	if _, err := rw.w.Write(rw.enc.encode(b)); err != nil {
		return 0, err
	}
	return len(b), nil
}

func (rw *responseWriter) Flush() {
	if rw.status != 0 {
		return
	}
	if !rw.wroteHeader {
		rw.WriteHeader(http.StatusOK)
	}
	if f, ok := rw.w.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap returns the wrapped writer, for http.ResponseController.
func (rw *responseWriter) Unwrap() http.ResponseWriter { return rw.w }

// finish writes what the response still needs once the handler returned:
// a non-gRPC response's head, or a gRPC response's trailers frame.
func (rw *responseWriter) finish() {
	h := rw.w.Header()
	if rw.status != 0 {
		h["Grpc-Status"] = []string{strconv.Itoa(httpToGRPCStatus(rw.status))}
		h["Grpc-Message"] = []string{percentEncode(rw.message.Bytes())}
		h["Content-Length"] = []string{"0"}
		for k := range h {
			if strings.HasPrefix(k, http.TrailerPrefix) {
				delete(h, k)
			}
		}
		rw.w.WriteHeader(rw.status)
		return
	}
	if !rw.wroteHeader {
		return // nothing was answered: net/http's 200, empty
	}
	var names []string
	for k := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return
	}
	slices.Sort(names)
	var block bytes.Buffer
	for _, k := range names {
		name := strings.ToLower(k[len(http.TrailerPrefix):])
		for _, v := range h[k] {
			block.WriteString(name)
			block.WriteByte(':')
			block.WriteString(v)
			block.WriteString("\r\n")
		}
		delete(h, k)
	}
	frame := make([]byte, 5, 5+block.Len())
	frame[0] = trailerFlag
	binary.BigEndian.PutUint32(frame[1:], uint32(block.Len()))
	frame = append(frame, block.Bytes()...)
	if rw.text {
		frame = []byte(base64.StdEncoding.EncodeToString(frame))
	}
	_, _ = rw.w.Write(frame)
}

// isGRPC reports whether a response Content-Type is gRPC's (or already
// gRPC-Web, which passes as it is).
func isGRPC(ct string) bool {
	ct, _, _ = strings.Cut(ct, ";")
	ct = strings.ToLower(strings.TrimSpace(ct))
	return ct == contentTypeGRPC || strings.HasPrefix(ct, contentTypeGRPC+"+") ||
		ct == contentTypeWeb || ct == contentTypeWebProto
}

// frameEncoder base64-encodes a stream of gRPC frames as it passes, each
// frame (its five-byte head and its message) padded on its own, as
// Envoy's filter does, without holding more than two bytes back.
type frameEncoder struct {
	head      [5]byte
	headLen   int    // bytes of the current frame's head seen
	remaining uint32 // message bytes of the current frame still to come
	carry     [3]byte
	carryLen  int
	out       []byte
}

// encode returns the base64 of b, frames completed in b padded.
func (e *frameEncoder) encode(b []byte) []byte {
	e.out = e.out[:0]
	for len(b) > 0 {
		if e.headLen < 5 {
			n := copy(e.head[e.headLen:], b)
			e.headLen += n
			e.add(b[:n])
			b = b[n:]
			if e.headLen == 5 {
				e.remaining = binary.BigEndian.Uint32(e.head[1:])
				if e.remaining == 0 {
					e.endFrame()
				}
			}
			continue
		}
		n := min(uint32(len(b)), e.remaining)
		e.add(b[:n])
		b = b[n:]
		if e.remaining -= n; e.remaining == 0 {
			e.endFrame()
		}
	}
	return e.out
}

// add encodes b after the carried bytes, carrying what does not make a
// group of three.
func (e *frameEncoder) add(b []byte) {
	for len(b) > 0 {
		n := copy(e.carry[e.carryLen:], b)
		e.carryLen += n
		b = b[n:]
		if e.carryLen == 3 {
			e.out = base64.StdEncoding.AppendEncode(e.out, e.carry[:])
			e.carryLen = 0
		}
	}
}

// endFrame pads the frame just completed.
func (e *frameEncoder) endFrame() {
	if e.carryLen > 0 {
		e.out = base64.StdEncoding.AppendEncode(e.out, e.carry[:e.carryLen])
		e.carryLen = 0
	}
	e.headLen = 0
}

// httpToGRPCStatus maps an HTTP status to a gRPC status code as Envoy does
// (and gRPC's http-grpc-status-mapping.md).
func httpToGRPCStatus(status int) int {
	switch status {
	case http.StatusBadRequest:
		return 13 // INTERNAL
	case http.StatusUnauthorized:
		return 16 // UNAUTHENTICATED
	case http.StatusForbidden:
		return 7 // PERMISSION_DENIED
	case http.StatusNotFound:
		return 12 // UNIMPLEMENTED
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return 14 // UNAVAILABLE
	}
	return 2 // UNKNOWN
}

// percentEncode encodes a grpc-message as gRPC and Envoy do: bytes outside
// printable ASCII, and '%', as %XX.
func percentEncode(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if c < 0x20 || c > 0x7e || c == '%' {
			fmt.Fprintf(&sb, "%%%02X", c)
			continue
		}
		sb.WriteByte(c)
	}
	return sb.String()
}
