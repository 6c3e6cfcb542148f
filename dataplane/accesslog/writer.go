package accesslog

import (
	"bufio"
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
	DefaultQueueSize = 4096
	// DefaultReopenInterval is how often a file's path is checked: a file
	// moved or deleted (logrotate) is reopened at its path.
	DefaultReopenInterval = time.Second
	// maxLineBuffer: a pooled buffer grown beyond it is not kept.
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
	// QueueSize bounds the lines waiting to be written; beyond it lines are
	// dropped (and counted), never waited for.
	QueueSize int
	// ReopenInterval is how often the path of a file is checked.
	ReopenInterval time.Duration
}

// Stats are a Writer's counters since it was built.
type Stats struct {
	// Written lines.
	Written uint64 `json:"written"`
	// Dropped lines: the queue was full (the file or stdout too slow), or
	// writing them failed.
	Dropped uint64 `json:"dropped"`
}

// Writer writes the lines of the listeners that log to one path, from one
// goroutine: Log never blocks. It is safe for concurrent use.
type Writer struct {
	path   string
	lines  chan *[]byte
	pool   sync.Pool // *[]byte
	logger *slog.Logger
	opts   Options

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
	if opts.QueueSize <= 0 {
		opts.QueueSize = DefaultQueueSize
	}
	if opts.ReopenInterval <= 0 {
		opts.ReopenInterval = DefaultReopenInterval
	}
	w := &Writer{
		path:   path,
		lines:  make(chan *[]byte, opts.QueueSize),
		logger: logger.With("access_log", path),
		opts:   opts,
		stop:   make(chan struct{}),
		done:   make(chan struct{}),
	}
	w.pool.New = func() any {
		b := make([]byte, 0, 1024)
		return &b
	}
	out, err := openLog(path)
	if err != nil {
		return nil, err
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

// Log formats e's line as s says and queues it, or drops it (counted)
// when the queue is full. end is when the request ended.
func (w *Writer) Log(s *Settings, e *Entry, end time.Time) {
	select {
	case <-w.stop:
		w.dropped.Add(1)
		return
	default:
	}
	bp := w.pool.Get().(*[]byte)
	*bp = s.appendLine((*bp)[:0], e, end)
	select {
	case w.lines <- bp:
	default:
		w.dropped.Add(1)
		w.release(bp)
	}
}

func (w *Writer) release(bp *[]byte) {
	if cap(*bp) <= maxLineBuffer {
		w.pool.Put(bp)
	}
}

// run writes the queued lines, flushing when the queue is empty, and
// reopens a file moved or deleted from its path.
func (w *Writer) run(out logFile) {
	defer close(w.done)
	buf := bufio.NewWriterSize(out.w, 64<<10)
	pending := uint64(0) // lines in buf
	flush := func() {
		if pending == 0 {
			return
		}
		if err := buf.Flush(); err != nil {
			w.dropped.Add(pending)
			w.logger.Debug("access log write failed", "lines", pending, "error", err)
			buf.Reset(out.w)
		} else {
			w.written.Add(pending)
		}
		pending = 0
	}
	write := func(bp *[]byte) {
		// Whole lines per write(2): processes appending to one file
		// (O_APPEND) never interleave inside a line.
		if len(*bp) > buf.Available() {
			flush()
		}
		_, _ = buf.Write(*bp) // errors surface in Flush
		pending++
		w.release(bp)
	}
	ticker := time.NewTicker(w.opts.ReopenInterval)
	defer ticker.Stop()
	defer func() {
		flush()
		if out.file != nil {
			_ = out.file.Close()
		}
	}()
	for {
		select {
		case bp := <-w.lines:
			write(bp)
			// Write what else is queued, then flush once.
			for more := true; more; {
				select {
				case bp := <-w.lines:
					write(bp)
				default:
					more = false
				}
			}
			flush()
		case <-ticker.C:
			if out.file != nil && moved(w.path, out.file) {
				flush()
				next, err := openLog(w.path)
				if err != nil {
					w.logger.Warn("access log: reopening failed", "error", err)
					continue
				}
				_ = out.file.Close()
				out = next
				buf.Reset(out.w)
			}
		case <-w.stop:
			for {
				select {
				case bp := <-w.lines:
					write(bp)
				default:
					return
				}
			}
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

// Close writes what is queued (within ctx) and stops w; lines logged
// afterwards are dropped.
func (w *Writer) Close(ctx context.Context) error {
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
