// Package demoapp is the small HTTP service behind the quickstart and the
// end-to-end tests: it says who it is and what it received, and can call
// another service through its sidecar's outbound listener. It answers a
// small gRPC service on the same port too (GreeterService).
package demoapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Options configure one demo service instance.
type Options struct {
	// Name is the service name reported in every response.
	Name string
	// Version is reported in every response (e.g. "v1").
	Version string
	// Listen is the host:port to serve on.
	Listen string
	// Outbound is the host:port of the sidecar's outbound listener, used by
	// /call/<service>/<path>. Empty disables calls.
	Outbound string
	Logger   *slog.Logger
}

// Reply is the JSON body of every demo response.
type Reply struct {
	Service string            `json:"service"`
	Version string            `json:"version,omitempty"`
	Method  string            `json:"method"`
	Proto   string            `json:"proto"`
	Host    string            `json:"host"`
	Path    string            `json:"path"`
	Query   string            `json:"query,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`
	// Upstream is the reply of the service called by /call/..., if any.
	Upstream *Reply `json:"upstream,omitempty"`
	// UpstreamStatus is the status of that call.
	UpstreamStatus int `json:"upstreamStatus,omitempty"`
}

// Handler returns the demo service's HTTP handler.
//
//   - /call/<service>/<path> calls http://<service>/<path> through Outbound,
//     with the same method, and embeds the reply;
//   - /delay/<ms>/... waits before answering (for timeout tests);
//   - /status/<code>/... answers with that status;
//   - anything else answers 200 with a Reply describing the request;
//   - a gRPC call (HTTP/2, application/grpc) is served by GreeterService
//     and the health service.
func Handler(opts Options) http.Handler {
	grpcServer := newGRPCServer(opts)
	client := &http.Client{Timeout: 30 * time.Second}
	if opts.Outbound != "" {
		outbound := opts.Outbound
		client.Transport = &http.Transport{
			DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, outbound)
			},
			MaxIdleConnsPerHost: 64,
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isGRPC(r) {
			grpcServer.ServeHTTP(w, r)
			return
		}
		_, _ = io.Copy(io.Discard, io.LimitReader(r.Body, 1<<20))
		reply := describe(opts, r)
		status := http.StatusOK
		switch {
		case strings.HasPrefix(r.URL.Path, "/call/"):
			if opts.Outbound == "" {
				http.Error(w, "no outbound configured", http.StatusNotImplemented)
				return
			}
			svc, rest, _ := strings.Cut(strings.TrimPrefix(r.URL.Path, "/call/"), "/")
			up, code, err := call(r.Context(), client, r.Method, svc, "/"+rest, r.Header)
			if err != nil {
				http.Error(w, fmt.Sprintf("call %s: %v", svc, err), http.StatusBadGateway)
				return
			}
			reply.Upstream, reply.UpstreamStatus = up, code
		case strings.HasPrefix(r.URL.Path, "/delay/"):
			ms, _ := strconv.Atoi(strings.SplitN(strings.TrimPrefix(r.URL.Path, "/delay/"), "/", 2)[0])
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
			case <-r.Context().Done():
				return
			}
		case strings.HasPrefix(r.URL.Path, "/status/"):
			code, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(r.URL.Path, "/status/"), "/", 2)[0])
			if err == nil && code >= 200 && code <= 599 {
				status = code
			}
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("X-Demo-Service", opts.Name)
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(reply)
	})
}

// traceHeaders are the trace context headers an app passes on from the
// request it serves to the calls it makes, so that the mesh's spans of
// both form one trace (W3C Trace Context, and B3; the B3 X-B3-* headers are
// x-* headers too).
var traceHeaders = []string{"Traceparent", "Tracestate", "B3"}

// call sends <method> http://<svc><path> through the sidecar's outbound
// listener, passing on the x-* and trace context headers of the inbound
// request.
func call(ctx context.Context, client *http.Client, method, svc, path string, in http.Header) (*Reply, int, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://"+svc+path, nil)
	if err != nil {
		return nil, 0, err
	}
	for k, v := range in {
		if strings.HasPrefix(strings.ToLower(k), "x-") && !strings.HasPrefix(strings.ToLower(k), "x-forwarded") {
			req.Header[k] = v
		}
	}
	for _, k := range traceHeaders {
		if v := in[k]; len(v) > 0 {
			req.Header[k] = v
		}
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, 0, err
	}
	var up Reply
	if err := json.Unmarshal(body, &up); err != nil {
		// Not a demo reply (e.g. a proxy's local reply): keep the text.
		up = Reply{Service: strings.TrimSpace(string(body))}
	}
	return &up, resp.StatusCode, nil
}

func describe(opts Options, r *http.Request) Reply {
	h := make(map[string]string, len(r.Header))
	keys := make([]string, 0, len(r.Header))
	for k := range r.Header {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		h[strings.ToLower(k)] = strings.Join(r.Header[k], ",")
	}
	return Reply{
		Service: opts.Name, Version: opts.Version, Method: r.Method, Proto: r.Proto, Host: r.Host,
		Path: r.URL.Path, Query: r.URL.RawQuery, Headers: h,
	}
}

// Serve runs the demo service until ctx is done.
func Serve(ctx context.Context, opts Options) error {
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return fmt.Errorf("demo service %s: %w", opts.Name, err)
	}
	return ServeListener(ctx, ln, opts)
}

// ServeListener runs the demo service on ln until ctx is done.
func ServeListener(ctx context.Context, ln net.Listener, opts Options) error {
	srv := &http.Server{Handler: Handler(opts), ReadHeaderTimeout: 10 * time.Second}
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("demo service %s: %w", opts.Name, err)
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			return err
		}
		return nil
	}
}
