package conformance

import (
	"bufio"
	"bytes"
	"net/http"
	"sync"
	"time"
)

// podLog is the log of one echo backend as the Kubernetes log API serves
// it (GET .../pods/POD/log?sinceTime=...): its output lines with the time
// each was written, the last maxPodLogLines of them. The mirror tests read
// it to find the requests a mirror delivered.
type podLog struct {
	mu      sync.Mutex
	partial []byte
	lines   []podLogLine
}

type podLogLine struct {
	at   time.Time
	text string
}

// maxPodLogLines bounds a pod log: the newest lines are kept (a mirror test
// looks for lines it just caused).
const maxPodLogLines = 50_000

func (l *podLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	l.partial = append(l.partial, p...)
	for {
		i := bytes.IndexByte(l.partial, '\n')
		if i < 0 {
			break
		}
		l.lines = append(l.lines, podLogLine{at: now, text: string(l.partial[:i])})
		l.partial = l.partial[i+1:]
	}
	if n := len(l.lines) - maxPodLogLines; n > 0 {
		l.lines = append(l.lines[:0:0], l.lines[n:]...)
	}
	return len(p), nil
}

// since returns the lines written at or after t (the API's sinceTime has
// a resolution of one second: t is rounded down to it).
func (l *podLog) since(t time.Time) []string {
	t = t.Truncate(time.Second)
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range l.lines {
		if !line.at.Before(t) {
			out = append(out, line.text)
		}
	}
	return out
}

// servePodLog handles GET /api/v1/namespaces/NS/pods/POD/log: the echo
// backend's output since sinceTime (RFC 3339), one line each.
func (w *world) servePodLog(rw http.ResponseWriter, req *http.Request, ns, pod string) {
	var log *podLog
	w.mu.Lock()
	for _, b := range w.backends {
		if b.namespace == ns && b.pod == pod {
			log = b.log
		}
	}
	w.mu.Unlock()
	if log == nil {
		http.Error(rw, "no such pod", http.StatusNotFound)
		return
	}
	var since time.Time
	if s := req.URL.Query().Get("sinceTime"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			http.Error(rw, "bad sinceTime: "+err.Error(), http.StatusBadRequest)
			return
		}
		since = t
	}
	rw.Header().Set("Content-Type", "text/plain")
	out := bufio.NewWriter(rw)
	for _, line := range log.since(since) {
		_, _ = out.WriteString(line)
		_ = out.WriteByte('\n')
	}
	_ = out.Flush()
}
