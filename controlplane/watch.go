package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
)

// watcher reports changes to the policy files. It watches parent directories,
// so that editors that save by writing a new file and renaming it over the
// old one are seen, and directories given as config paths themselves.
type watcher struct {
	fs    *fsnotify.Watcher
	files map[string]bool // config files, absolute
	dirs  map[string]bool // config directories, absolute

	// extra are files the policy names (the PEM files of TLS Secrets),
	// absolute, set by watchFiles; their directories are watched too.
	mu          sync.Mutex
	extra       map[string]bool
	watchedDirs map[string]bool
}

func newWatcher(paths []string) (*watcher, error) {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return nil, fmt.Errorf("watch config: %w", err)
	}
	w := &watcher{fs: fsw, files: map[string]bool{}, dirs: map[string]bool{}, extra: map[string]bool{}}
	watched := map[string]bool{}
	w.watchedDirs = watched
	for _, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			fsw.Close()
			return nil, fmt.Errorf("watch config %s: %w", p, err)
		}
		toWatch := []string{filepath.Dir(abs)}
		if info, err := os.Stat(abs); err == nil && info.IsDir() {
			w.dirs[abs] = true
			toWatch = append(toWatch, abs)
		} else {
			w.files[abs] = true
		}
		for _, dir := range toWatch {
			if watched[dir] {
				continue
			}
			if err := fsw.Add(dir); err != nil {
				fsw.Close()
				return nil, fmt.Errorf("watch config directory %s: %w", dir, err)
			}
			watched[dir] = true
		}
	}
	return w, nil
}

func (w *watcher) Close() error { return w.fs.Close() }

// watchFiles makes changes to paths (absolute) reload the policy too, in
// place of the files given before: the PEM files the policy's Secrets
// name. A directory that cannot be watched is logged and left out.
func (w *watcher) watchFiles(paths []string, logger *slog.Logger) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.extra = make(map[string]bool, len(paths))
	for _, p := range paths {
		w.extra[p] = true
		dir := filepath.Dir(p)
		if w.watchedDirs[dir] {
			continue
		}
		if err := w.fs.Add(dir); err != nil {
			logger.Warn("cannot watch the directory of a certificate file: its changes apply at the next reload", "file", p, "error", err)
			continue
		}
		w.watchedDirs[dir] = true
	}
}

// relevant reports whether an event on path can change the policy.
func (w *watcher) relevant(path string) bool {
	if w.files[path] || w.dirs[path] {
		return true
	}
	w.mu.Lock()
	extra := w.extra[path]
	w.mu.Unlock()
	if extra {
		return true
	}
	ext := strings.ToLower(filepath.Ext(path))
	return w.dirs[filepath.Dir(path)] && (ext == ".yaml" || ext == ".yml")
}

// run calls reload once the config has been quiet for debounce after a change,
// until ctx is done.
func (w *watcher) run(ctx context.Context, debounce time.Duration, logger *slog.Logger, reload func()) {
	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-w.fs.Events:
			if !ok {
				return
			}
			if ev.Has(fsnotify.Chmod) && !ev.Has(fsnotify.Write) {
				continue
			}
			if p, err := filepath.Abs(ev.Name); err == nil && w.relevant(p) {
				logger.Debug("config changed", "path", ev.Name, "op", ev.Op.String())
				timer.Reset(debounce)
			}
		case err, ok := <-w.fs.Errors:
			if !ok {
				return
			}
			logger.Warn("config watch error", "error", err)
		case <-timer.C:
			reload()
		}
	}
}
