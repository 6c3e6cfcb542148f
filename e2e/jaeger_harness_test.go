package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// jaeger is a real Jaeger v2 (tools/jaeger, v1.75.0) with memory storage,
// its OTLP receivers and query HTTP API on free loopback ports.
type jaeger struct {
	t         *testing.T
	bin       string
	config    string // its configuration file
	otlpGRPC  string // OTLP/gRPC receiver
	otlpHTTP  string // OTLP/HTTP receiver
	query     string // query HTTP API (/api/...)
	queryGRPC string
	proc      *exec.Cmd
	out       *syncBuffer
	done      chan struct{}
}

// jaegerBinary is $MESHGATE_JAEGER_BIN, else tools/jaeger/bin/jaeger (built
// by `make jaeger`).
func jaegerBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("MESHGATE_JAEGER_BIN"); p != "" {
		return p
	}
	p, err := filepath.Abs(filepath.Join("..", "tools", "jaeger", "bin", "jaeger"))
	if err == nil {
		if _, err = os.Stat(p); err == nil {
			return p
		}
	}
	t.Fatalf("no jaeger binary (%v): run `make jaeger` or set MESHGATE_JAEGER_BIN", err)
	return ""
}

// jaegerConfig is Jaeger v2's configuration (an OpenTelemetry Collector
// configuration): OTLP receivers, memory storage, the query API, every
// listener on loopback, no self-tracing and no telemetry listener.
const jaegerConfig = `service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    resource:
      service.name: jaeger
    metrics:
      level: none
    logs:
      level: info
extensions:
  jaeger_query:
    storage:
      traces: memstore
    enable_tracing: false
    http:
      endpoint: %s
    grpc:
      endpoint: %s
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 10000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
`

// startJaeger starts Jaeger for the test and waits until its receivers and
// query API answer; it is stopped when the test ends.
func startJaeger(t *testing.T) *jaeger {
	t.Helper()
	e2eOnly(t)
	j := &jaeger{t: t, out: &syncBuffer{}}
	t.Cleanup(func() {
		j.stop()
		if t.Failed() {
			t.Logf("---- output of jaeger\n%s", j.out.String())
		}
	})
	j.bin = jaegerBinary(t)
	j.otlpGRPC, j.otlpHTTP, j.query, j.queryGRPC = freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	j.config = filepath.Join(t.TempDir(), "jaeger.yaml")
	writeFile(t, j.config, fmt.Sprintf(jaegerConfig, j.query, j.queryGRPC, j.otlpGRPC, j.otlpHTTP))
	j.start()
	return j
}

// start runs Jaeger (again: on the same ports, with empty storage) and
// waits until its receivers and query API answer.
func (j *jaeger) start() {
	t := j.t
	t.Helper()
	j.proc = exec.Command(j.bin, "--config", "file:"+j.config)
	j.proc.Stdout, j.proc.Stderr = j.out, j.out
	j.done = make(chan struct{})
	if err := j.proc.Start(); err != nil {
		t.Fatalf("start jaeger: %v", err)
	}
	done, cmd := j.done, j.proc
	go func() { _ = cmd.Wait(); close(done) }()
	eventually(t, 30*time.Second, "jaeger up", func() error {
		select {
		case <-done:
			t.Fatalf("jaeger exited at start (its output is logged below)")
		default:
		}
		for _, addr := range []string{j.otlpGRPC, j.otlpHTTP} {
			conn, err := net.DialTimeout("tcp", addr, time.Second)
			if err != nil {
				return err
			}
			conn.Close()
		}
		var services struct{ Data []string }
		return j.get("/api/services", &services)
	})
}

// stop ends Jaeger (SIGTERM) and waits for it.
func (j *jaeger) stop() {
	if j.proc == nil {
		return
	}
	select {
	case <-j.done:
		return
	default:
	}
	_ = j.proc.Process.Signal(syscall.SIGTERM)
	select {
	case <-j.done:
	case <-time.After(10 * time.Second):
		_ = j.proc.Process.Kill()
		<-j.done
	}
}

// errTraceNotFound: Jaeger has no trace of that id.
var errTraceNotFound = fmt.Errorf("trace not found")

// get reads a query API path as JSON into v.
func (j *jaeger) get(path string, v any) error {
	resp, err := client.Get("http://" + j.query + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 8<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusNotFound {
		return errTraceNotFound
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("jaeger %s: %d %.300s", path, resp.StatusCode, body)
	}
	return json.Unmarshal(body, v)
}

// jaegerTrace is a trace as the query API's /api/traces/{id} gives it.
type jaegerTrace struct {
	TraceID   string                   `json:"traceID"`
	Spans     []jaegerSpan             `json:"spans"`
	Processes map[string]jaegerProcess `json:"processes"`
}

type jaegerSpan struct {
	TraceID       string `json:"traceID"`
	SpanID        string `json:"spanID"`
	OperationName string `json:"operationName"`
	References    []struct {
		RefType string `json:"refType"`
		TraceID string `json:"traceID"`
		SpanID  string `json:"spanID"`
	} `json:"references"`
	Tags      []jaegerTag `json:"tags"`
	ProcessID string      `json:"processID"`
}

type jaegerTag struct {
	Key   string `json:"key"`
	Value any    `json:"value"`
}

type jaegerProcess struct {
	ServiceName string `json:"serviceName"`
}

// tag returns a span's tag as text ("" when absent).
func (s jaegerSpan) tag(key string) string {
	for _, t := range s.Tags {
		if t.Key == key {
			return fmt.Sprint(t.Value)
		}
	}
	return ""
}

// parent is the span's CHILD_OF reference ("" for a root).
func (s jaegerSpan) parent() string {
	for _, r := range s.References {
		if r.RefType == "CHILD_OF" {
			return r.SpanID
		}
	}
	return ""
}

// trace reads one trace back (errTraceNotFound when Jaeger has none).
func (j *jaeger) trace(id string) (*jaegerTrace, error) {
	var out struct {
		Data []jaegerTrace `json:"data"`
	}
	if err := j.get("/api/traces/"+id, &out); err != nil {
		return nil, err
	}
	if len(out.Data) == 0 {
		return nil, errTraceNotFound
	}
	return &out.Data[0], nil
}
