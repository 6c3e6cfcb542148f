package extauthz

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshgate/meshgate/dataplane/httpfilter"
	"github.com/meshgate/meshgate/dataplane/xdscheck"
)

// fakeGRPCService answers Check calls framed as gRPC over HTTP/2 would be.
type fakeGRPCService struct {
	answer *authv3.CheckResponse
	status string // grpc-status; "" means "0"
	err    error
	got    *authv3.CheckRequest
	call   *http.Request
}

func (f *fakeGRPCService) RoundTrip(cluster string, r *http.Request, timeout time.Duration) (*http.Response, error) {
	if cluster != "authz" || timeout != 2*time.Second {
		return nil, errors.New("wrong cluster or timeout")
	}
	f.call = r
	data, _ := io.ReadAll(r.Body)
	f.got = new(authv3.CheckRequest)
	if len(data) < 5 || proto.Unmarshal(data[5:], f.got) != nil {
		return nil, errors.New("bad frame")
	}
	if f.err != nil {
		return nil, f.err
	}
	msg, _ := proto.Marshal(f.answer)
	frame := make([]byte, 5+len(msg))
	binary.BigEndian.PutUint32(frame[1:5], uint32(len(msg)))
	copy(frame[5:], msg)
	status := f.status
	if status == "" {
		status = "0"
	}
	return &http.Response{StatusCode: 200, Header: http.Header{"Content-Type": {"application/grpc"}},
		Body: io.NopCloser(bytes.NewReader(frame)), Trailer: http.Header{"Grpc-Status": {status}}}, nil
}

func grpcConfig(failOpen bool) *extauthzv3.ExtAuthz {
	return &extauthzv3.ExtAuthz{
		TransportApiVersion: corev3.ApiVersion_V3,
		FailureModeAllow:    failOpen,
		Services: &extauthzv3.ExtAuthz_GrpcService{GrpcService: &corev3.GrpcService{
			TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: "authz"}},
			Timeout:         durationpb.New(2 * time.Second),
		}},
	}
}

func TestFilterGRPC(t *testing.T) {
	t.Parallel()
	ok := &authv3.CheckResponse{Status: &rpcstatus.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: "x-user", Value: "alice"}},
			{Header: &corev3.HeaderValue{Key: "x-tag", Value: "b"}, AppendAction: corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD},
			{Header: &corev3.HeaderValue{Key: "content-length", Value: "9"}},
		},
		HeadersToRemove: []string{"x-drop"},
	}}}
	denied := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 7}, HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Unauthorized},
		Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-reason", Value: "r"}}},
		Body:    "no",
	}}}
	deniedNoStatus := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: 7}}
	tests := []struct {
		name     string
		svc      *fakeGRPCService
		failOpen bool
		status   int
		upstream bool
		toUp     map[string][]string
		toClient map[string]string
		body     string
		stat     string
	}{
		{name: "ok: headers set, appended, removed", svc: &fakeGRPCService{answer: ok}, status: 200, upstream: true,
			toUp: map[string][]string{"X-User": {"alice"}, "X-Tag": {"a", "b"}, "X-Drop": nil}, stat: StatOK},
		{name: "denied: status, headers, body", svc: &fakeGRPCService{answer: denied}, status: 401,
			toClient: map[string]string{"X-Reason": "r"}, body: "no", stat: StatDenied},
		{name: "denied without a status: 403", svc: &fakeGRPCService{answer: deniedNoStatus}, status: 403, stat: StatDenied},
		{name: "a gRPC error: 403", svc: &fakeGRPCService{answer: ok, status: "14"}, status: 403, stat: StatError},
		{name: "unreachable, closed: 403", svc: &fakeGRPCService{err: errors.New("refused")}, status: 403, stat: StatError},
		{name: "unreachable, open: allowed", svc: &fakeGRPCService{err: errors.New("refused")}, failOpen: true,
			status: 200, upstream: true, stat: StatFailureModeAllowed},
	}
	factory := Factory()
	checker, err := xdscheck.New(factory.Subset())
	if err != nil {
		t.Fatal(err)
	}
	tbl := routes(t)
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := grpcConfig(tt.failOpen)
			if err := checker.Check(cfg); err != nil {
				t.Fatalf("the config is outside the subset: %v", err)
			}
			stats := new(httpfilter.Stats)
			f, err := newFilter("authz", cfg, httpfilter.Env{Stats: stats})
			if err != nil {
				t.Fatal(err)
			}
			up := &upstreamSeen{}
			h := f.(httpfilter.UpstreamFilter).WrapUpstreams(up, tt.svc)
			r := httptest.NewRequest(http.MethodGet, "http://orders.example/checked/a?b=1", nil)
			r.Header.Set("X-Tag", "a")
			r.Header.Set("X-Drop", "d")
			r.Header.Set("X-Api-Key", "k")
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r, tbl.Match(r))
			if w.Code != tt.status || up.called != tt.upstream {
				t.Fatalf("status %d, upstream called %v; want %d, %v", w.Code, up.called, tt.status, tt.upstream)
			}
			call := tt.svc.call
			if call.URL.Path != checkMethod || call.Header.Get("Content-Type") != "application/grpc" || call.Header.Get("Grpc-Timeout") != "2000m" {
				t.Errorf("call %s %v", call.URL.Path, call.Header)
			}
			hr := tt.svc.got.GetAttributes().GetRequest().GetHttp()
			if hr.GetMethod() != "GET" || hr.GetPath() != "/checked/a?b=1" || hr.GetHost() != "orders.example" ||
				hr.GetHeaders()["x-api-key"] != "k" || hr.GetHeaders()[":path"] != "/checked/a?b=1" ||
				tt.svc.got.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress() != "192.0.2.1" {
				t.Errorf("CheckRequest %v", tt.svc.got)
			}
			for k, v := range tt.toUp {
				if got := up.header.Values(k); len(got) != len(v) || len(v) > 0 && got[len(got)-1] != v[len(v)-1] {
					t.Errorf("upstream %s %q, want %q", k, got, v)
				}
			}
			if up.called && up.header.Get("Content-Length") != "" {
				t.Errorf("upstream Content-Length set by the service: %q", up.header.Get("Content-Length"))
			}
			for k, v := range tt.toClient {
				if got := w.Header().Get(k); got != v {
					t.Errorf("client %s %q, want %q", k, got, v)
				}
			}
			if w.Body.String() != tt.body && !tt.upstream {
				t.Errorf("client body %q, want %q", w.Body.String(), tt.body)
			}
			if stats.Snapshot()[StatFamily][tt.stat] != 1 {
				t.Errorf("stats %v, want one %s", stats.Snapshot()[StatFamily], tt.stat)
			}
		})
	}
}
