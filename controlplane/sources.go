package controlplane

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshgate/meshgate/policy"
)

// serviceFiles renders discovered services as policy documents (JSON is
// YAML), one file per service named after its Source.File, so that they are
// validated with, and can clash with, the static policy.
func serviceFiles(services []*policy.Service) ([]policy.File, error) {
	files := make([]policy.File, 0, len(services))
	for _, svc := range services {
		doc := map[string]any{
			"apiVersion": policy.MeshgateAPIVersion,
			"kind":       policy.KindService,
			"metadata":   map[string]string{"name": svc.Name, "namespace": svc.Namespace},
			"spec":       svc.Spec,
		}
		data, err := json.Marshal(doc)
		if err != nil {
			return nil, fmt.Errorf("discovered service %s: %w", svc.Name, err)
		}
		name := svc.Source.File
		if name == "" {
			name = "discovery/" + svc.Name
		}
		files = append(files, policy.File{Name: name, Data: data})
	}
	return files, nil
}

// ServiceFiles renders discovered services as the policy files the control
// plane validates them as, for tools that validate policy exactly as the
// control plane does (`meshgate apply --store consul` with the Consul
// catalog): they go before the policy files, as in ControlPlane.compile.
func ServiceFiles(services []*policy.Service) ([]policy.File, error) {
	return serviceFiles(services)
}

// maxPolicyFileSize bounds one policy file, as policy.Load does.
const maxPolicyFileSize = 16 << 20

// readPolicyFiles reads policy files and directories as policy.Load does:
// a file itself, or every *.yaml and *.yml file of a directory, sorted, not
// recursive.
func readPolicyFiles(paths []string) ([]policy.File, policy.ErrorList) {
	var files []policy.File
	var errs policy.ErrorList
	seen := map[string]bool{}
	for _, p := range paths {
		names := []string{p}
		info, err := os.Stat(p)
		if err != nil {
			errs = append(errs, &policy.Error{File: p, Message: fmt.Sprintf("reading policy: %v", err)})
			continue
		}
		if info.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				errs = append(errs, &policy.Error{File: p, Message: fmt.Sprintf("reading policy directory: %v", err)})
				continue
			}
			names = names[:0]
			for _, e := range entries {
				ext := strings.ToLower(filepath.Ext(e.Name()))
				if !e.IsDir() && (ext == ".yaml" || ext == ".yml") {
					names = append(names, filepath.Join(p, e.Name()))
				}
			}
			slices.Sort(names)
		}
		for _, name := range names {
			if seen[filepath.Clean(name)] {
				continue
			}
			seen[filepath.Clean(name)] = true
			data, err := os.ReadFile(name)
			switch {
			case err != nil:
				errs = append(errs, &policy.Error{File: name, Message: fmt.Sprintf("reading policy: %v", err)})
			case len(data) > maxPolicyFileSize:
				errs = append(errs, &policy.Error{File: name, Message: fmt.Sprintf("file larger than %d bytes", maxPolicyFileSize)})
			default:
				files = append(files, policy.File{Name: name, Data: data})
			}
		}
	}
	return files, errs
}

// debounced returns trigger, which calls f d after the first of a burst of
// triggers (the triggers while a call is pending coalesce into it, so a
// steady stream of changes cannot postpone the call forever), and stop,
// which cancels a pending call.
func debounced(d time.Duration, f func()) (trigger, stop func()) {
	var mu sync.Mutex
	var timer *time.Timer
	pending, stopped := false, false
	fire := func() {
		mu.Lock()
		pending = false
		skip := stopped
		mu.Unlock()
		if !skip {
			f()
		}
	}
	trigger = func() {
		mu.Lock()
		defer mu.Unlock()
		if pending || stopped {
			return
		}
		pending = true
		if timer == nil {
			timer = time.AfterFunc(d, fire)
		} else {
			timer.Reset(d)
		}
	}
	stop = func() {
		mu.Lock()
		defer mu.Unlock()
		stopped = true
		if timer != nil {
			timer.Stop()
		}
	}
	return trigger, stop
}
