package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// Defaults of Options.
const (
	DefaultListen       = "127.0.0.1:8089"
	DefaultRedisTimeout = 200 * time.Millisecond
	// DefaultMemoryCounters bounds the counters of the memory store.
	DefaultMemoryCounters = 100_000
	// maxRecvBytes bounds a request (a proxy's are a few hundred bytes).
	maxRecvBytes = 64 << 10
)

// Options configure Serve.
type Options struct {
	// Listen is the gRPC address (default DefaultListen: loopback).
	Listen string
	// Redis is the Redis address (host:port); "" with Memory.
	Redis string
	// RedisTimeout bounds each Redis operation (default DefaultRedisTimeout).
	RedisTimeout time.Duration
	// Memory counts in this process instead (meshgate dev).
	Memory bool
	Logger *slog.Logger
	// Ready, when not nil, is called with the address served once the
	// listener is open.
	Ready func(addr string)
}

// Serve runs the rate-limit service until ctx is done.
func Serve(ctx context.Context, opts Options) error {
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	var store Store
	switch {
	case opts.Memory && opts.Redis != "":
		return errors.New("ratelimit: --redis and --memory: choose one")
	case opts.Memory:
		store = NewMemoryStore(DefaultMemoryCounters)
	case opts.Redis != "":
		timeout := opts.RedisTimeout
		if timeout <= 0 {
			timeout = DefaultRedisTimeout
		}
		rs := NewRedisStore(opts.Redis, timeout)
		defer rs.Close()
		if err := rs.Ping(ctx); err != nil {
			// Not fatal: the proxies' failure mode applies until Redis
			// answers.
			log.Warn("redis does not answer yet", "redis", opts.Redis, "error", err)
		}
		store = rs
	default:
		return errors.New("ratelimit: --redis ADDR is required (or --memory for a single local instance)")
	}
	listen := opts.Listen
	if listen == "" {
		listen = DefaultListen
	}
	l, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("ratelimit: listen: %w", err)
	}
	srv := grpc.NewServer(
		grpc.MaxRecvMsgSize(maxRecvBytes),
		grpc.MaxConcurrentStreams(1024),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: 5 * time.Minute}),
	)
	rlsv3.RegisterRateLimitServiceServer(srv, NewService(store, log))
	log.Info("rate limit service", "listen", l.Addr().String(), "redis", opts.Redis, "memory", opts.Memory)
	if opts.Ready != nil {
		opts.Ready(l.Addr().String())
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	select {
	case <-ctx.Done():
		stopped := make(chan struct{})
		go func() { srv.GracefulStop(); close(stopped) }()
		select {
		case <-stopped:
		case <-time.After(5 * time.Second):
			srv.Stop()
		}
		return nil
	case err := <-done:
		return fmt.Errorf("ratelimit: serve: %w", err)
	}
}
