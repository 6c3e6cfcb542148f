package demoapp

import (
	"context"
	"net/http"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// GreeterService is the gRPC service every demo service answers next to
// its HTTP API (on the same port, over cleartext HTTP/2), without a .proto:
// its messages are google.protobuf.StringValue.
const GreeterService = "meshgate.demo.Greeter"

// GreeterHello is the full method name of GreeterService's one unary
// method: it answers "hello <request> from <service> <version>".
const GreeterHello = "/" + GreeterService + "/Hello"

// greeting is GreeterHello's answer to in.
func greeting(opts Options, in string) string {
	if in == "" {
		in = "there"
	}
	msg := "hello " + in + " from " + opts.Name
	if opts.Version != "" {
		msg += " " + opts.Version
	}
	return msg
}

// newGRPCServer is the demo service's gRPC server: GreeterService and the
// standard health service (grpc.health.v1.Health, SERVING).
func newGRPCServer(opts Options) *grpc.Server {
	srv := grpc.NewServer()
	srv.RegisterService(&grpc.ServiceDesc{
		ServiceName: GreeterService,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: "Hello",
			Handler: func(_ any, _ context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				return wrapperspb.String(greeting(opts, in.GetValue())), nil
			},
		}},
	}, struct{}{})
	healthpb.RegisterHealthServer(srv, health.NewServer())
	return srv
}

// isGRPC reports whether r is a gRPC call (HTTP/2, content type
// application/grpc or application/grpc+<codec>; gRPC-Web is not).
func isGRPC(r *http.Request) bool {
	if r.ProtoMajor != 2 {
		return false
	}
	ct := r.Header.Get("Content-Type")
	return ct == "application/grpc" || strings.HasPrefix(ct, "application/grpc+") || strings.HasPrefix(ct, "application/grpc;")
}
