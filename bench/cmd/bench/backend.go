package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Paths of the backend: a tiny body and a 16 KiB body.
const (
	pathTiny  = "/tiny"
	pathLarge = "/16k"
	largeSize = 16 << 10
)

// runBackend serves the benchmark backend on addr until ctx ends: the same
// small, fast upstream for every contender, HTTP/1.1 and h2c.
func runBackend(ctx context.Context, addr string) error {
	tiny := []byte("hello, bench\n")
	large := bytes.Repeat([]byte("x"), largeSize)
	serve := func(body []byte) http.HandlerFunc {
		n := strconv.Itoa(len(body))
		return func(w http.ResponseWriter, _ *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"text/plain"}
			h["Content-Length"] = []string{n}
			_, _ = w.Write(body)
		}
	}
	mux := http.NewServeMux()
	mux.Handle(pathTiny, serve(tiny))
	mux.Handle(pathLarge, serve(large))
	mux.Handle("/", serve(tiny))
	// The tracing collector of workload (f): spans accepted and dropped (an
	// empty ExportTraceServiceResponse).
	mux.HandleFunc(pathOTLPTraces, func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header()["Content-Type"] = []string{"application/x-protobuf"}
		w.WriteHeader(http.StatusOK)
	})
	var protocols http.Protocols
	protocols.SetHTTP1(true)
	protocols.SetUnencryptedHTTP2(true)
	srv := &http.Server{Handler: mux, Protocols: &protocols, ReadHeaderTimeout: 10 * time.Second}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("backend listen: %w", err)
	}
	go func() {
		<-ctx.Done()
		_ = srv.Close()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("backend: %w", err)
	}
	return nil
}
