package extauthz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"
)

// checkMethod is the path of envoy.service.auth.v3.Authorization/Check.
const checkMethod = "/envoy.service.auth.v3.Authorization/Check"

// maxCheckResponseBytes bounds a CheckResponse.
const maxCheckResponseBytes = 1 << 20

// grpcOutcome is the answer of a gRPC authorization service.
type grpcOutcome struct {
	allowed bool
	// headers to set (or append) on an allowed request, and to remove.
	headers []*corev3.HeaderValueOption
	remove  []string
	// status, headers and body of a denial.
	deniedStatus  int
	deniedHeaders []*corev3.HeaderValueOption
	deniedBody    string
}

// checkRequest is r's CheckRequest, with its attributes as Envoy fills
// them: source and destination addresses, the request's method, path,
// host, scheme, protocol and headers (lower-case names, the allowed ones
// when allowed_headers is set), and the body's first bytes.
func (h *handler) checkRequest(r *http.Request, body []byte) *authv3.CheckRequest {
	headers := make(map[string]string, len(r.Header)+3)
	for name, values := range r.Header {
		if len(h.allowed) > 0 && !matchesAny(h.allowed, name) {
			continue
		}
		headers[strings.ToLower(name)] = strings.Join(values, ",")
	}
	headers[":method"], headers[":path"], headers[":authority"] = r.Method, r.URL.RequestURI(), r.Host
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	req := &authv3.AttributeContext_HttpRequest{
		Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Scheme: scheme, Protocol: r.Proto,
		Headers: headers, Size: r.ContentLength, Body: string(body),
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source:      &authv3.AttributeContext_Peer{Address: socketAddress(r.RemoteAddr)},
		Destination: &authv3.AttributeContext_Peer{Address: socketAddress(localAddr(r))},
		Request:     &authv3.AttributeContext_Request{Http: req},
	}}
}

func localAddr(r *http.Request) string {
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return ""
}

func socketAddress(hostPort string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return nil
	}
	n, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)}}}}
}

// checkGRPC calls Authorization/Check on the cluster (HTTP/2 through the
// cluster's transport: its endpoints, load balancing and mTLS).
func (h *handler) checkGRPC(r *http.Request) (*grpcOutcome, error) {
	if h.upstreams == nil {
		return nil, errors.New("no clusters")
	}
	body, err := h.bodyPrefix(r)
	if err != nil {
		return nil, err
	}
	msg, err := proto.Marshal(h.checkRequest(r, body))
	if err != nil {
		return nil, fmt.Errorf("marshal CheckRequest: %w", err)
	}
	frame := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
	copy(frame[5:], msg)
	out := &http.Request{Method: http.MethodPost, URL: &url.URL{Scheme: "http", Path: checkMethod}, Proto: "HTTP/2.0", ProtoMajor: 2,
		Header: http.Header{
			"Content-Type": {"application/grpc"}, "Te": {"trailers"},
			"Grpc-Timeout": {strconv.FormatInt(h.timeout.Milliseconds(), 10) + "m"},
		},
		Host: h.authority, ContentLength: int64(len(frame)), Body: io.NopCloser(bytes.NewReader(frame))}
	out = out.WithContext(r.Context())
	resp, err := h.upstreams.RoundTrip(h.cluster, out, h.timeout)
	if err != nil {
		return nil, err
	}
	defer func() { _ = resp.Body.Close() }()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxCheckResponseBytes+5+1))
	if err != nil {
		return nil, fmt.Errorf("read CheckResponse: %w", err)
	}
	status := resp.Trailer.Get("Grpc-Status")
	if status == "" {
		status = resp.Header.Get("Grpc-Status")
	}
	if resp.StatusCode != http.StatusOK || status != "0" {
		return nil, fmt.Errorf("check: HTTP %d, grpc-status %q", resp.StatusCode, status)
	}
	if len(data) < 5 || data[0] != 0 || int(binary.BigEndian.Uint32(data[1:5])) != len(data)-5 {
		return nil, errors.New("check: not one uncompressed message")
	}
	var cr authv3.CheckResponse
	if err := proto.Unmarshal(data[5:], &cr); err != nil {
		return nil, fmt.Errorf("unmarshal CheckResponse: %w", err)
	}
	o := &grpcOutcome{allowed: cr.GetStatus().GetCode() == 0}
	if o.allowed {
		o.headers, o.remove = cr.GetOkResponse().GetHeaders(), cr.GetOkResponse().GetHeadersToRemove()
		return o, nil
	}
	d := cr.GetDeniedResponse()
	o.deniedStatus = int(d.GetStatus().GetCode())
	if o.deniedStatus == 0 {
		o.deniedStatus = http.StatusForbidden
	}
	o.deniedHeaders, o.deniedBody = d.GetHeaders(), d.GetBody()
	return o, nil
}

// applyHeaders applies HeaderValueOptions to h: append, or set (the
// default), never a header the
// proxy does not pass.
func applyHeaders(h http.Header, opts []*corev3.HeaderValueOption) {
	for _, o := range opts {
		name := http.CanonicalHeaderKey(o.GetHeader().GetKey())
		if !passes(name) || name == "" || strings.HasPrefix(name, ":") {
			continue
		}
		value := o.GetHeader().GetValue()
		if o.GetAppendAction() == corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
			h.Add(name, value)
		} else {
			h.Set(name, value)
		}
	}
}
