// Command proxyless-client is a plain grpc-go client that calls a mesh
// service without a sidecar: grpc-go's own xDS client (the xds:///
// resolver and xDS credentials) gets the routes, clusters and endpoints
// from meshgate's control plane and speaks mTLS to the service's sidecar
// with the mesh certificate the bootstrap names. Nothing in it is
// meshgate's: copy it.
//
//	GRPC_XDS_BOOTSTRAP=~/.config/meshgate/dev/proxyless/grpc-client/bootstrap.json \
//	  go run ./examples/proxyless-client xds:///greeter:9090
//
// It calls meshgate.demo.Greeter/Hello (the quickstart's demo services
// answer it; its messages are google.protobuf.StringValue) and prints the
// answer; with -health it calls the standard health service instead.
package main

import (
	"context"
	"flag"
	"fmt"
	"log"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/protobuf/types/known/wrapperspb"

	_ "google.golang.org/grpc/xds" // the xds:/// resolver and the xDS balancers
)

func main() {
	name := flag.String("name", "proxyless", "the name to greet")
	health := flag.Bool("health", false, "call grpc.health.v1.Health/Check instead of Greeter/Hello")
	timeout := flag.Duration("timeout", 10*time.Second, "deadline of the call")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: GRPC_XDS_BOOTSTRAP=bootstrap.json %s [flags] xds:///service[:port]\n", os.Args[0])
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *name, *health, *timeout); err != nil {
		log.Fatal(err)
	}
}

func run(target, name string, health bool, timeout time.Duration) error {
	// xDS credentials: mTLS as the control plane configures it (the
	// bootstrap's certificate provider), plaintext where it configures none.
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(creds))
	if err != nil {
		return err
	}
	defer conn.Close()

	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if health {
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return fmt.Errorf("health check %s: %w", target, err)
		}
		fmt.Println(resp.GetStatus())
		return nil
	}
	out := new(wrapperspb.StringValue)
	if err := conn.Invoke(ctx, "/meshgate.demo.Greeter/Hello", wrapperspb.String(name), out); err != nil {
		return fmt.Errorf("call %s: %w", target, err)
	}
	fmt.Println(out.GetValue())
	return nil
}
