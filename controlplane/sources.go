package controlplane

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshgate/meshgate/controlplane/model"
	"github.com/meshgate/meshgate/policy"
)

// PolicyServices are the discovered services as the Services of the policy
// the control plane validates them as (their definitions with their
// endpoints: policy.Input.Services), for tools that validate policy exactly
// as the control plane does (`meshgate apply --store consul` with the
// Consul catalog).
func PolicyServices(discovered []*model.DiscoveredService) []*policy.Service {
	out := make([]*policy.Service, 0, len(discovered))
	for _, d := range discovered {
		out = append(out, d.PolicyService())
	}
	return out
}

// compileMemo is what the last reloads compiled, for the next (reloads
// are serial: it has no lock). A reload whose policy (files or KV
// entries) and discovered definitions are those of a recent one reuses its
// validated set and compiled model and only adds the discovered endpoints:
// a change of endpoints alone (the Consul catalog's usual change) is
// neither validated nor compiled again. A discovered service whose value
// did not change has its endpoints checked once.
type compileMemo struct {
	// addressing is the services' addressing the models are compiled
	// with (Options.ServiceAddressing).
	addressing model.ServiceAddressing
	// recent are the compilations of the last reloads, newest first: at
	// most two, as the applied policy and a held destructive change
	// alternate while the change waits (see confirmDestructive).
	recent []*routingCompilation
	// endpointErrs are the checks of the last reload's discovered
	// services' endpoints, by value.
	endpointErrs map[*model.DiscoveredService]checkedEndpoints
}

// checkedEndpoints is the check of a discovered service's endpoints: the
// service with its valid endpoints only, and the errors of the others.
type checkedEndpoints struct {
	valid *model.DiscoveredService
	errs  policy.ErrorList
}

// routingCompilation is the policy of one input, validated with the
// discovered definitions and compiled without the discovered endpoints.
type routingCompilation struct {
	version     string                     // policyInput.version
	definitions []*model.DiscoveredService // compared by SameDefinition
	model       *model.Model
	summary     *policySummary
	// result is the policy's evaluation.
	result *policy.Result
	// loadErr is the policy's validation error; compileErr the model's
	// (a bug: see model.Compile).
	loadErr, compileErr error
	// logged: its compile problems were logged (they are, once).
	logged bool
}

// latest is the compilation of the last reload, or nil.
func (c *compileMemo) latest() *routingCompilation {
	if len(c.recent) == 0 {
		return nil
	}
	return c.recent[0]
}

// maxRecentCompilations bounds compileMemo.recent.
const maxRecentCompilations = 2

// routing returns the compilation of in with the definitions of
// discovered, from a recent reload or evaluated (with lastGood, the set
// served) and compiled now. A recent compilation is reused whatever set
// was served since: it is that of the same policy and definitions (the
// last good versions it kept are those of the set served before it).
func (c *compileMemo) routing(in policyInput, discovered []*model.DiscoveredService, evaluate func(policy.Input) *policy.Result, lastGood *policy.Set) *routingCompilation {
	for i, r := range c.recent {
		if r.version == in.version && slices.EqualFunc(r.definitions, discovered, (*model.DiscoveredService).SameDefinition) {
			c.recent = slices.Insert(slices.Delete(c.recent, i, i+1), 0, r)
			return r
		}
	}
	definitions := make([]*policy.Service, len(discovered))
	for i, d := range discovered {
		definitions[i] = d.Definition()
	}
	r := &routingCompilation{version: in.version, definitions: discovered}
	r.result = evaluate(policy.Input{Services: definitions, Files: in.files, ReadErrors: in.readErrors, LastGood: lastGood})
	set := r.result.Set
	switch {
	case set == nil && len(r.result.Errors) > 0:
		r.loadErr = r.result.Errors
	case set == nil:
		r.loadErr = errors.New("the policy cannot be served")
	default:
		r.model, r.compileErr = model.CompileWith(set, model.CompileOptions{PolicyVersion: in.version, Addressing: c.addressing})
		if r.compileErr != nil {
			r.compileErr = fmt.Errorf("compiling the model: %w (a bug of meshgate: the policy accepted it)", r.compileErr)
			break
		}
		r.result = r.result.WithProblems(compileProblems(r.model.Problems))
		r.summary = summarize(in, set, r.model)
		r.summary.set, r.summary.result = set, r.result
	}
	c.recent = slices.Insert(c.recent, 0, r)
	if len(c.recent) > maxRecentCompilations {
		c.recent = c.recent[:maxRecentCompilations]
	}
	return r
}

// checkEndpoints checks the endpoints of the discovered services the
// policy registers (a service without a name, or the second of one name,
// is not: the policy reports it), reusing the checks of unchanged values.
// It returns those services with their valid endpoints only, and, by
// service, the errors of the endpoints left out.
func (c *compileMemo) checkEndpoints(discovered []*model.DiscoveredService) ([]*model.DiscoveredService, map[*model.DiscoveredService]checkedEndpoints) {
	next := make(map[*model.DiscoveredService]checkedEndpoints, len(discovered))
	seen := make(map[model.NamespacedName]bool, len(discovered))
	valid := make([]*model.DiscoveredService, 0, len(discovered))
	var errs map[*model.DiscoveredService]checkedEndpoints
	for _, d := range discovered {
		key := model.NamespacedName{Namespace: cmp.Or(d.Namespace, policy.DefaultNamespace), Name: d.Name}
		if d.Name == "" || seen[key] {
			continue
		}
		seen[key] = true
		checked, ok := c.endpointErrs[d]
		if !ok {
			checked.valid, checked.errs = d.WithValidEndpoints()
		}
		next[d] = checked
		valid = append(valid, checked.valid)
		if len(checked.errs) > 0 {
			if errs == nil {
				errs = make(map[*model.DiscoveredService]checkedEndpoints)
			}
			errs[d] = checked
		}
	}
	c.endpointErrs = next
	return valid, errs
}

// endpointProblems are the problems of the discovered services some of
// whose endpoints are left out, for their statuses.
func endpointProblems(discovered []*model.DiscoveredService, errs map[*model.DiscoveredService]checkedEndpoints) []policy.ResourceProblem {
	var out []policy.ResourceProblem
	for _, d := range discovered {
		e, ok := errs[d]
		if !ok {
			continue
		}
		out = append(out, policy.ResourceProblem{Kind: policy.KindService, Namespace: cmp.Or(d.Namespace, policy.DefaultNamespace), Name: d.Name,
			File: d.Source, Condition: policy.ConditionEndpoints, Reason: policy.ReasonInvalidEndpoints,
			Message: fmt.Sprintf("%d of its %d endpoints are left out; the others serve", len(d.Endpoints)-len(e.valid.Endpoints), len(d.Endpoints)),
			Errors:  e.errs})
	}
	return out
}

// compileProblems are the resources the model left out, for their
// statuses.
func compileProblems(problems []model.CompileProblem) []policy.ResourceProblem {
	out := make([]policy.ResourceProblem, 0, len(problems))
	for _, p := range problems {
		state, message := policy.StateRejected, "it is not served"
		if p.Kind == policy.KindSecurityPolicy {
			state, message = policy.StateFailClosed, "every request to its targets is denied until it is fixed"
		}
		out = append(out, policy.ResourceProblem{Kind: p.Kind, Namespace: p.Namespace, Name: p.Name, File: p.Source.File, State: state,
			Condition: policy.ConditionCompiled, Reason: policy.ReasonCompileError,
			Message: "meshgate accepted the resource but could not compile it (a bug of meshgate); " + message,
			Errors:  policy.ErrorList{{File: p.Source.File, Line: p.Source.Line, Message: "compile error (a bug of meshgate): " + p.Err.Error()}}})
	}
	return out
}

// joinPolicyErrors adds the errors of the discovered endpoints to those of
// the policy's validation (loadErr, or nil), in file and line order, as
// one validation of both reports them.
func joinPolicyErrors(loadErr error, endpointErrs policy.ErrorList) error {
	var list policy.ErrorList
	if loadErr != nil && !errors.As(loadErr, &list) {
		if len(endpointErrs) == 0 {
			return loadErr
		}
		return errors.Join(loadErr, endpointErrs)
	}
	list = append(slices.Clone(list), endpointErrs...)
	slices.SortStableFunc(list, func(a, b *policy.Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
	return list
}

// maxPolicyFileSize bounds one policy file, as policy.Load does.
const maxPolicyFileSize = 16 << 20

// readPolicyFiles reads policy files and directories as policy.Load does:
// a file itself, or every *.yaml and *.yml file of a directory, sorted, not
// recursive. A configured path that cannot be read at all (gone, a
// directory that cannot be listed) fails the whole read (err): what the
// policy holds is unknown. A file that cannot be read on its own (its
// permissions, too large, removed between the listing and the read) is a
// read error of that file (fileErrs): the other files are read.
func readPolicyFiles(paths []string) (files []policy.File, fileErrs policy.ErrorList, err error) {
	var pathErrs policy.ErrorList
	seen := map[string]bool{}
	for _, p := range paths {
		names := []string{p}
		info, err := os.Stat(p)
		if err != nil {
			pathErrs = append(pathErrs, &policy.Error{File: p, Message: fmt.Sprintf("reading policy: %v", err)})
			continue
		}
		if info.IsDir() {
			entries, err := os.ReadDir(p)
			if err != nil {
				pathErrs = append(pathErrs, &policy.Error{File: p, Message: fmt.Sprintf("reading policy directory: %v", err)})
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
			data, err := readPolicyFile(name)
			if err != nil {
				fileErrs = append(fileErrs, &policy.Error{File: name, Message: err.Error()})
				continue
			}
			files = append(files, policy.File{Name: name, Data: data})
		}
	}
	if len(pathErrs) > 0 {
		return nil, nil, slices.Concat(pathErrs, fileErrs)
	}
	return files, fileErrs, nil
}

// readPolicyFile reads one policy file, at most maxPolicyFileSize bytes.
func readPolicyFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPolicyFileSize+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("reading policy: %w", err)
	case len(data) > maxPolicyFileSize:
		return nil, fmt.Errorf("file larger than %d bytes", maxPolicyFileSize)
	}
	return data, nil
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
