package accesslog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Writer defaults (Options).
const (
	// DefaultBufferSize bounds the bytes of lines waiting to be written;
	// beyond it lines are dropped.
	DefaultBufferSize = 1 << 20
	// DefaultFlushInterval is how often the lines are written (sooner when
	// flushThreshold bytes are waiting).
	DefaultFlushInterval = 100 * time.Millisecond
	// DefaultReopenInterval is how often a file's path is checked: a file
	// moved or deleted (logrotate) is reopened at its path.
	DefaultReopenInterval = time.Second
	// flushThreshold: this many bytes waiting wake the writer early.
	flushThreshold = 64 << 10
	// maxLineBuffer: a pooled line buffer grown beyond it is not kept.
	maxLineBuffer = 16 << 10
)

// Stdout and Stderr are the paths of the proxy's standard output and error,
// written to directly (never reopened).
const (
	Stdout = "/dev/stdout"
	Stderr = "/dev/stderr"
)

// Options tune a Writer; zero values take the defaults.
type Options struct {
	// BufferSize bounds the bytes of lines waiting to be written; beyond
	// it lines are dropped (and counted), never waited for.
	BufferSize int
	// FlushInterval is how long a line waits at most before it is written.
	FlushInterval time.Duration
	// ReopenInterval is how often the path of a file is checked.
	ReopenInterval time.Duration
}

// Stats are a Writer's counters since it was built.
type Stats struct {
	// Written lines.
	Written uint64 `json:"written"`
	// Dropped lines: the buffer was full (the file or stdout too slow), or
	// writing them failed.
	Dropped uint64 `json:"dropped"`
}

// Writer writes the lines of the listeners that log to one path: requests
// append their line to a bounded buffer, and one goroutine writes it out
// in whole lines, at most every FlushInterval. Log never blocks on the
// output. It is safe for concurrent use.
type Writer struct {
	path    string
	opts    Options
	logger  *slog.Logger
	scratch sync.Pool // *[]byte: a line being formatted

	mu      sync.Mutex
	pending []byte // whole lines waiting
	lines   uint64 // lines in pending
	closed  bool

	kick             chan struct{} // wakes the writer early (cap 1)
	written, dropped atomic.Uint64

	stop     chan struct{}
	stopOnce sync.Once
	done     chan struct{}
}

// NewWriter opens path (created, appended to) and starts its writer.
// logger may be nil.
func NewWriter(path string, opts Options, logger *slog.Logger) (*Writer, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if opts.BufferSize <= 0 {
		opts.BufferSize = DefaultBufferSize
	}
	if opts.FlushInterval <= 0 {
		opts.FlushInterval = DefaultFlushInterval
	}
	if opts.ReopenInterval <= 0 {
		opts.ReopenInterval = DefaultReopenInterval
	}
	out, err := openLog(path)
	if err != nil {
		return nil, err
	}
	w := &Writer{
		path:   path,
		opts:   opts,
		logger: logger.With("access_log", path),
		kick:   make(chan struct{}, 1),
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	w.scratch.New = func() any {
		b := make([]byte, 0, 1024)
		return &b
	}
	go w.run(out)
	return w, nil
}

// logFile is where a Writer writes: a file it opened, or stdout/stderr.
type logFile struct {
	w    io.Writer
	file *os.File // nil for stdout and stderr
}

func openLog(path string) (logFile, error) {
	switch path {
	case Stdout:
		return logFile{w: os.Stdout}, nil
	case Stderr:
		return logFile{w: os.Stderr}, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		return logFile{}, fmt.Errorf("access log %s: %w", path, err)
	}
	return logFile{w: f, file: f}, nil
}

// Path returns the path w writes to.
func (w *Writer) Path() string { return w.path }

// Stats returns w's counters.
func (w *Writer) Stats() Stats {
	return Stats{Written: w.written.Load(), Dropped: w.dropped.Load()}
}

// Counts are the lines written and dropped so far (Stats' counters).
func (w *Writer) Counts() (written, dropped uint64) {
	return w.written.Load(), w.dropped.Load()
}

// Log formats e's line as s says and adds it to the buffer, or drops it
// (counted) when the buffer is full or w is closed. end is when the
// request ended.
func (w *Writer) Log(s *Settings, e *Entry, end time.Time) {
	bp := w.scratch.Get().(*[]byte)
	line := s.appendLine((*bp)[:0], e, end)
	w.mu.Lock()
	switch {
	case w.closed || len(w.pending)+len(line) > w.opts.BufferSize:
		w.dropped.Add(1)
	default:
		w.pending = append(w.pending, line...)
		w.lines++
		if len(w.pending) >= flushThreshold {
			select {
			case w.kick <- struct{}{}:
			default:
			}
		}
	}
	w.mu.Unlock()
	*bp = line
	if cap(line) <= maxLineBuffer {
		w.scratch.Put(bp)
	}
}

// take returns the lines waiting, leaving spare (emptied) in their place.
func (w *Writer) take(spare []byte) ([]byte, uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out, n := w.pending, w.lines
	w.pending, w.lines = spare[:0], 0
	return out, n
}

// run writes the lines every FlushInterval (or when kicked), one write per
// batch of whole lines, so that processes appending to one file (O_APPEND)
// never interleave inside a line; it reopens a file moved or deleted from
// its path.
func (w *Writer) run(out logFile) {
	defer close(w.done)
	var spare []byte
	flush := func() {
		batch, n := w.take(spare)
		if n > 0 {
			if _, err := out.w.Write(batch); err != nil {
				w.dropped.Add(n)
				w.logger.Debug("access log write failed", "lines", n, "error", err)
			} else {
				w.written.Add(n)
			}
		}
		if cap(batch) > 2*w.opts.BufferSize {
			batch = nil // do not keep a buffer grown by a burst of long lines
		}
		spare = batch
	}
	ticker := time.NewTicker(w.opts.FlushInterval)
	defer ticker.Stop()
	lastCheck := time.Now()
	defer func() {
		if out.file != nil {
			_ = out.file.Close()
		}
	}()
	for {
		select {
		case <-w.kick:
			flush()
		case now := <-ticker.C:
			flush()
			if out.file != nil && now.Sub(lastCheck) >= w.opts.ReopenInterval {
				lastCheck = now
				if moved(w.path, out.file) {
					next, err := openLog(w.path)
					if err != nil {
						w.logger.Warn("access log: reopening failed", "error", err)
						continue
					}
					_ = out.file.Close()
					out = next
				}
			}
		case <-w.stop:
			flush()
			return
		}
	}
}

// moved reports whether path no longer names f (renamed or deleted).
func moved(path string, f *os.File) bool {
	at, err := os.Stat(path)
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	open, err := f.Stat()
	if err != nil {
		return false
	}
	return !os.SameFile(at, open)
}

// Close writes what is waiting (within ctx) and stops w; lines logged
// afterwards are dropped.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	w.stopOnce.Do(func() { close(w.stop) })
	select {
	case <-w.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Log is one access_log entry of a listener: its settings and the Writer
// of its path.
type Log struct {
	Settings *Settings
	Writer   *Writer
}

// Finish writes e's line to each of logs.
func Finish(logs []Log, e *Entry) {
	end := time.Now()
	for _, l := range logs {
		l.Writer.Log(l.Settings, e, end)
	}
}
