package accesslog

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/structpb"
)

// settingsOf parses a file access logger of fields.
func settingsOf(t *testing.T, path string, fields map[string]any) *Settings {
	t.Helper()
	st, err := structpb.NewStruct(fields)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := anypb.New(&filev3.FileAccessLog{Path: path, AccessLogFormat: &filev3.FileAccessLog_LogFormat{
		LogFormat: &corev3.SubstitutionFormatString{Format: &corev3.SubstitutionFormatString_JsonFormat{JsonFormat: st}}}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse([]*accesslogv3.AccessLog{{Name: LoggerName, ConfigType: &accesslogv3.AccessLog_TypedConfig{TypedConfig: cfg}}})
	if err != nil {
		t.Fatal(err)
	}
	return s[0]
}

// entryFor is the Entry of a request to target answered with status.
func entryFor(target string, status int) *Entry {
	e, _ := Start(httptest.NewRecorder(), httptest.NewRequest("GET", target, nil))
	e.WriteHeader(status)
	return e
}

// TestFormat: fields are sorted by name; a whole operator keeps its type
// (number, string, null when absent), literals are as configured, text
// around operators is one escaped string.
func TestFormat(t *testing.T) {
	t.Parallel()
	s := settingsOf(t, "/dev/stdout", map[string]any{
		"status": "%RESPONSE_CODE%", "ua": "%REQ(User-Agent)%", "n": 1.5, "on": true,
		"text": `"%REQ(:METHOD)%" %REQ(X-None)% 100%%`, "agent": "%REQ(X-Agent)%",
	})
	req := httptest.NewRequest("GET", "/a", nil)
	req.Header.Set("X-Agent", "a\"b\x01\xff")
	e, _ := Start(httptest.NewRecorder(), req)
	e.WriteHeader(http.StatusTeapot)
	got := string(s.appendLine(nil, e, time.Now()))
	want := `{"agent":"a\"b\u0001\ufffd","n":1.5,"on":true,"status":418,"text":"\"GET\" - 100%","ua":null}` + "\n"
	if got != want {
		t.Errorf("line\n%s want\n%s", got, want)
	}
}

// TestWriterDropsWhenBlocked: when the file does not take lines (a pipe
// nobody reads), Log never blocks: lines beyond the queue are dropped and
// counted.
func TestWriterDropsWhenBlocked(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	// A reader that never reads, so that opening for writing does not wait.
	r, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	w, err := NewWriter(path, Options{BufferSize: 16 << 10}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := settingsOf(t, path, map[string]any{"pad": strings.Repeat("x", 1000)})
	const lines = 2000 // ~2 MB: more than the pipe and twice the buffer
	e := entryFor("/", 200)
	for range lines {
		w.Log(s, e, time.Now())
	}
	st := w.Stats()
	if st.Dropped == 0 || st.Written+st.Dropped > lines {
		t.Errorf("stats %+v after %d lines: want some dropped", st, lines)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_ = w.Close(ctx) // the writer is stuck on the pipe: do not wait
	r.Close()
}

// TestWriterReopensMovedFile: a file moved away (logrotate's rename) is
// reopened at its path within the reopen interval; lines before the move
// are in the moved file, lines after in the new one.
func TestWriterReopensMovedFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	synctest.Test(t, func(t *testing.T) {
		path := filepath.Join(dir, "access.log")
		w, err := NewWriter(path, Options{ReopenInterval: time.Second}, nil)
		if err != nil {
			t.Fatal(err)
		}
		s := settingsOf(t, path, map[string]any{"path": "%REQ(:PATH)%"})
		w.Log(s, entryFor("/before", 200), time.Now())
		time.Sleep(DefaultFlushInterval) // virtual: the line is written
		synctest.Wait()
		if err := os.Rename(path, path+".1"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Second) // virtual: one reopen interval
		synctest.Wait()
		w.Log(s, entryFor("/after", 200), time.Now())
		if err := w.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		old, err := os.ReadFile(path + ".1")
		if err != nil {
			t.Fatal(err)
		}
		cur, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(old) != `{"path":"/before"}`+"\n" || string(cur) != `{"path":"/after"}`+"\n" {
			t.Errorf("moved file %q, new file %q", old, cur)
		}
		if st := w.Stats(); st.Written != 2 || st.Dropped != 0 {
			t.Errorf("stats %+v", st)
		}
	})
}
