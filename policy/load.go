package policy

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// maxFileSize bounds one policy file.
const maxFileSize = 16 << 20

// File is one policy file, by name and contents, for LoadFiles.
type File struct {
	// Name is reported in errors and Source.File.
	Name string
	Data []byte
}

// Load reads policy resources from files and directories (every *.yaml and
// *.yml file in a directory, sorted, not recursive), validates them as one
// set, and returns the set, or an ErrorList naming every problem found.
func Load(paths ...string) (*Set, error) {
	files, errs := readPaths(paths)
	return load(Input{Files: files, ReadErrors: errs}, decodeFile)
}

// LoadWithWarnings is Load that also returns the warnings: notes about
// accepted resources (Result.Warnings), returned with or without errors.
func LoadWithWarnings(paths ...string) (*Set, ErrorList, error) {
	files, errs := readPaths(paths)
	r := evaluate(Input{Files: files, ReadErrors: errs}, decodeFile, false)
	if len(r.Errors) > 0 {
		return nil, r.Warnings, r.Errors
	}
	return r.Set, r.Warnings, nil
}

// EvaluatePaths is Evaluate for the policy files and directories paths
// name, read as Load reads them (a file that cannot be read is one of the
// Result's damaged files).
func EvaluatePaths(paths ...string) *Result {
	files, errs := readPaths(paths)
	return Evaluate(Input{Files: files, ReadErrors: errs})
}

// readPaths reads the policy files that paths name, reporting those it
// cannot read.
func readPaths(paths []string) ([]File, ErrorList) {
	var errs ErrorList
	var files []File
	read := make(map[string]bool)
	for _, p := range paths {
		names, err := expandPath(p)
		if err != nil {
			errs = append(errs, &Error{File: p, Message: err.Error()})
			continue
		}
		for _, name := range names {
			if read[filepath.Clean(name)] {
				continue
			}
			read[filepath.Clean(name)] = true
			data, err := readFile(name)
			if err != nil {
				errs = append(errs, &Error{File: name, Message: err.Error()})
				continue
			}
			files = append(files, File{Name: name, Data: data})
		}
	}
	return files, errs
}

// LoadFiles is Load for contents already in memory (from a key-value store,
// for example). Files are read in the order given.
func LoadFiles(files ...File) (*Set, error) {
	return load(Input{Files: files}, decodeFile)
}

// Input is everything one load validates as one set.
type Input struct {
	// Files are policy files, read in order.
	Files []File
	// Services are Services defined outside the files, by a discovery
	// source, as typed values. They are registered before the resources
	// of the files (a Service of a file with the same name is reported as
	// their duplicate) and validated as a Service of a file is, their
	// Source naming them in errors (e.g. "consul:catalog/orders", line 1).
	// The Set holds them as given: they must not be modified afterwards.
	Services []*Service
	// ReadErrors are the errors found reading the policy files (each
	// naming its file): they are reported with the others, and Evaluate
	// keeps serving the last good resources of those files.
	ReadErrors ErrorList
	// LastGood is the set last served (the previous Result.Set), for
	// Evaluate: a resource rejected now keeps its last good version from
	// it. Load and LoadInput ignore it.
	LastGood *Set
}

// LoadInput validates the Services and the policy files of in as one set,
// as LoadFiles validates files.
func LoadInput(in Input) (*Set, error) {
	in.LastGood = nil
	return load(in, decodeFile)
}

// expandPath lists the policy files a path names: itself, or the *.yaml and
// *.yml files of a directory.
func expandPath(p string) ([]string, error) {
	info, err := os.Stat(p)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	if !info.IsDir() {
		return []string{p}, nil
	}
	entries, err := os.ReadDir(p)
	if err != nil {
		return nil, fmt.Errorf("reading policy directory: %w", err)
	}
	var names []string
	for _, e := range entries {
		ext := strings.ToLower(filepath.Ext(e.Name()))
		if e.IsDir() || (ext != ".yaml" && ext != ".yml") {
			continue
		}
		names = append(names, filepath.Join(p, e.Name()))
	}
	slices.Sort(names)
	return names, nil
}

func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading policy: %w", err)
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("file larger than %d bytes", maxFileSize)
	}
	return data, nil
}

// resourceKey identifies a resource across all files.
type resourceKey struct {
	kind, namespace, name string
}

func (k resourceKey) String() string {
	return fmt.Sprintf("%s %q", k.kind, k.namespace+"/"+k.name)
}

// loader accumulates resources and errors over one load.
type loader struct {
	errs ErrorList
	// openAPI: the OpenAPI documents read by this evaluation (nil: none
	// yet); lastGoodOpenAPI those of the last good set; lastGoodTraffic
	// the TrafficPolicies of this pass that are last good versions: they
	// keep the documents they were accepted with.
	openAPI         *openAPIReads
	lastGoodOpenAPI map[string][]byte
	lastGoodTraffic map[*TrafficPolicy]bool
	set             Set
	defined         map[resourceKey]Source
	// malformed marks resources whose documents could not be decoded at
	// all: they are kept so references to them resolve, but not validated.
	malformed map[resourceKey]bool
	// dropped lists, per document, the fields left out because their values
	// were invalid (already reported): errors about those fields or inside
	// them would only repeat the problem in other words.
	dropped map[documentID][]string
	// meshConfigs collects every MeshConfig; validation keeps the first
	// and reports the others.
	meshConfigs []*MeshConfig

	// Of decoding (see Evaluate): the resources registered, in order; the
	// documents that repeat an identity; the files some of whose content
	// could not be read as resources.
	cands   []*candidate
	dups    []*candidate
	damaged map[string]bool

	// Of one validation pass (see Evaluate).
	pass passState
	// warnings are notes about accepted resources (Result.Warnings).
	warnings ErrorList

	// consumerFiles: the API consumers files read by this evaluation (nil:
	// none yet); lastGoodConsumers those of the last good set;
	// lastGoodSecurity the SecurityPolicies of this pass that are last
	// good versions: they keep the consumers they were accepted with.
	consumerFiles     *consumerFileReads
	lastGoodConsumers map[string][]APIKeyConsumer
	lastGoodSecurity  map[*SecurityPolicy]bool
}

// load applies the Services of in, then decodes every file with decode
// (decodeFile, or a Cache's equivalent), applies what each document
// contributes in order, and validates the whole set; errs are the errors
// found reading the files.
func load(in Input, decode func(File) *fileEffect) (*Set, error) {
	r := evaluate(in, decode, false)
	if len(r.Errors) > 0 {
		return nil, r.Errors
	}
	return r.Set, nil
}

// decodeInput decodes the Services and files of in into a loader: its
// candidates (the resources registered), duplicates, damaged files and the
// errors of decoding (the read errors first).
func decodeInput(in Input, decode func(File) *fileEffect) *loader {
	l := &loader{
		errs:      slices.Clone(in.ReadErrors),
		defined:   make(map[resourceKey]Source),
		malformed: make(map[resourceKey]bool),
		dropped:   make(map[documentID][]string),
		damaged:   make(map[string]bool),
	}
	for _, e := range in.ReadErrors {
		l.damaged[e.File] = true
	}
	for _, s := range in.Services {
		l.applyDocument(serviceDocument(s))
	}
	for _, f := range in.Files {
		l.set.Files = append(l.set.Files, f.Name)
		l.applyFile(decode(f))
	}
	return l
}

// sortErrors sorts errors by file, then line, keeping the order of errors
// of one line.
func sortErrors(errs ErrorList) {
	slices.SortStableFunc(errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.File, b.File), cmp.Compare(a.Line, b.Line))
	})
}

// documentID identifies a document by where it starts.
type documentID struct {
	file string
	line int
}

// errorf reports a problem with the field at path of the resource at src,
// unless that field's value was invalid and left out.
func (l *loader) errorf(src Source, field, format string, args ...any) {
	id := documentID{src.File, src.Line}
	if l.isDropped(id, field) {
		return
	}
	l.errs = append(l.errs, &Error{
		File:    src.File,
		Line:    src.LineOf(field),
		Field:   field,
		Message: fmt.Sprintf(format, args...),
		attr:    attribution{doc: documentID{src.File, src.Line}},
	})
}

// classifiedf reports, as errorf does, a problem that does not reject its
// resource (attr says what it does instead; attr.doc is set here).
func (l *loader) classifiedf(src Source, field string, attr attribution, format string, args ...any) {
	id := documentID{src.File, src.Line}
	if l.isDropped(id, field) {
		return
	}
	attr.doc = id
	l.errs = append(l.errs, &Error{
		File:    src.File,
		Line:    src.LineOf(field),
		Field:   field,
		Message: fmt.Sprintf(format, args...),
		attr:    attr,
	})
}

// refErrorf reports a reference of the resource at src that does not
// resolve (reason: BackendNotFound, InvalidKind, RefNotPermitted...): the
// resource is accepted, the reference resolves to nothing.
func (l *loader) refErrorf(src Source, field, reason, format string, args ...any) {
	l.classifiedf(src, field, attribution{class: classRef, reason: reason}, format, args...)
}

// parentErrorf reports that the route at src does not attach to its
// parentRef parent (reason: NoMatchingParent, NotAllowedByListeners,
// NoMatchingListenerHostname...): the route is accepted for its other
// parents.
func (l *loader) parentErrorf(src Source, parent int, field, reason, format string, args ...any) {
	l.classifiedf(src, field, attribution{class: classParent, index: parent, reason: reason}, format, args...)
}

// listenerErrorf reports a listener of o (a Gateway or a ListenerSet)
// that is not programmed (reason: a listener Accepted reason, or
// HostnameConflict or ProtocolConflict for a conflict, InvalidRouteKinds
// for route kinds): o keeps its other listeners.
func (l *loader) listenerErrorf(o listenerOwner, listener int, field, reason, format string, args ...any) {
	if l.pass.badListeners == nil {
		l.pass.badListeners = make(map[listenerOwner]map[int]bool)
	}
	if l.pass.badListeners[o] == nil {
		l.pass.badListeners[o] = make(map[int]bool)
	}
	l.pass.badListeners[o][listener] = true
	l.classifiedf(o.source(), field, attribution{class: classListener, index: listener, reason: reason}, format, args...)
}

// isDropped reports whether field, of the document id, is or is inside a
// value left out because it was invalid.
func (l *loader) isDropped(id documentID, field string) bool {
	for _, d := range l.dropped[id] {
		if field == d || strings.HasPrefix(field, d+".") || strings.HasPrefix(field, d+"[") {
			return true
		}
	}
	return false
}

// fileEffect is what one file contributes to a load: the effects of its
// documents, in order, then the error that stopped its parsing, if any. It
// depends only on the file's name and contents.
type fileEffect struct {
	docs []*docEffect
	// stop is the YAML syntax error (or parser panic) after which the rest
	// of the file was not read; nil when the whole file was read.
	stop *Error
}

// docEffect is everything one YAML document contributes to a load, computed
// from the document alone (its nodes and file name) by decodeDocument. The
// loader applies it in document order (applyDocument): filtering its errors
// against the dropped fields, registering its resource and detecting
// duplicates happen there, because they depend on the other documents.
// A docEffect is never modified once built, so that a Cache can apply it to
// many loads; its resource is shared by the Sets of those loads.
type docEffect struct {
	// errs are the document's own errors, in the order they were found.
	errs []docError
	// dropped, when not empty, is recorded as the dropped fields of the
	// document droppedID just before errs[droppedAt] is reported.
	dropped   []string
	droppedID documentID
	droppedAt int
	// res is the resource the document defines, of kind kind (*Gateway,
	// *HTTPRoute, *Service, *MeshConfig or *SecurityPolicy), or nil; meta
	// is its identity, registered (duplicates checked) when it is applied.
	res  any
	kind *kind
	meta decodedMeta
}

// docError is an error found while decoding a document.
type docError struct {
	err Error
	// filtered errors are dropped, as loader.errorf does, when their field
	// is inside a dropped value of the document filterID.
	filtered bool
	filterID documentID
}

// errorf records what loader.errorf reports, to be filtered when applied.
func (d *docEffect) errorf(src Source, field, format string, args ...any) {
	d.errs = append(d.errs, docError{
		err: Error{
			File:    src.File,
			Line:    src.LineOf(field),
			Field:   field,
			Message: fmt.Sprintf(format, args...),
		},
		filtered: true,
		filterID: documentID{src.File, src.Line},
	})
	d.errs[len(d.errs)-1].err.attr.doc = documentID{src.File, src.Line}
}

// applyFile applies the effect of one file.
func (l *loader) applyFile(fe *fileEffect) {
	for _, d := range fe.docs {
		l.applyDocument(d)
	}
	if fe.stop != nil {
		e := *fe.stop
		l.errs = append(l.errs, &e)
		l.damaged[e.File] = true
	}
}

// applyDocument applies the effect of one document, exactly as decoding it
// into the loader would have.
func (l *loader) applyDocument(d *docEffect) {
	for i := range d.errs {
		if i == d.droppedAt && len(d.dropped) > 0 {
			l.dropped[d.droppedID] = d.dropped
		}
		de := &d.errs[i]
		if de.filtered && l.isDropped(de.filterID, de.err.Field) {
			continue
		}
		e := de.err // each load gets its own Error values
		l.errs = append(l.errs, &e)
	}
	if d.droppedAt >= len(d.errs) && len(d.dropped) > 0 {
		l.dropped[d.droppedID] = d.dropped
	}
	if d.res == nil {
		if len(d.errs) > 0 {
			// A document that cannot name its resource: its file's other
			// content may be lost with it.
			l.damaged[d.errs[0].err.File] = true
		}
		return
	}
	c := &candidate{key: d.meta.key, res: d.res, kind: d.kind, source: d.meta.source, malformed: d.meta.malformed,
		generation: d.meta.objectMeta.Generation}
	if !l.register(d.meta) {
		c.duplicate = true
		l.dups = append(l.dups, c)
		return
	}
	l.cands = append(l.cands, c)
}

// serviceDocument is what a Service given as a value (Input.Services)
// contributes to a load: what decoding its document would (the checks of
// its metadata, the default protocol), without a document.
func serviceDocument(s *Service) *docEffect {
	d := &docEffect{kind: kindNamed(KindService)}
	if s.Namespace == "" || slices.ContainsFunc(s.Spec.Ports, func(p ServicePort) bool { return p.Protocol == "" }) {
		c := *s // the caller's value is not ours to modify
		c.Namespace = cmp.Or(c.Namespace, DefaultNamespace)
		c.Spec.Ports = slices.Clone(c.Spec.Ports)
		for i := range c.Spec.Ports {
			c.Spec.Ports[i].Protocol = cmp.Or(c.Spec.Ports[i].Protocol, ProtocolHTTP)
		}
		s = &c
	}
	src := s.Source
	if msg := checkDNSLabel(s.Namespace); msg != "" {
		d.errorf(src, "metadata.namespace", "invalid namespace %q: %s", s.Namespace, msg)
	}
	if s.Name == "" {
		d.errorf(src, "metadata.name", "name is required")
		return d
	}
	if msg := checkDNSLabel(s.Name); msg != "" {
		d.errorf(src, "metadata.name", "invalid name %q: %s", s.Name, msg)
	}
	d.res = s
	d.meta = decodedMeta{
		key:        resourceKey{kind: KindService, namespace: s.Namespace, name: s.Name},
		objectMeta: metav1.ObjectMeta{Name: s.Name, Namespace: s.Namespace, Generation: 1},
		source:     src,
	}
	return d
}

// decodeFile decodes every YAML document of one file.
func decodeFile(f File) (fe *fileEffect) {
	fe = &fileEffect{}
	defer func() {
		// The YAML parser is third-party code: a panic on hostile input
		// becomes an error, never a crash. What the document being decoded
		// contributed before the panic is kept, as before the refactoring
		// into effects.
		if r := recover(); r != nil {
			fe.stop = &Error{File: f.Name, Message: fmt.Sprintf("cannot parse YAML: %v", r)}
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(f.Data))
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			return fe
		}
		if err != nil {
			fe.stop = yamlSyntaxError(f.Name, err)
			return fe // the parser cannot resynchronise after a syntax error
		}
		d := &docEffect{}
		fe.docs = append(fe.docs, d) // before decoding: see the recover above
		decodeDocument(d, f.Name, &doc)
	}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// isYAMLParserProblem reports whether a yaml/v3 error message comes from its
// parser rather than its scanner.
func isYAMLParserProblem(problem string) bool {
	switch problem {
	case "did not find expected <stream-start>", "did not find expected <document start>",
		"did not find expected node content", "did not find expected '-' indicator",
		"did not find expected key", "did not find expected ',' or ']'",
		"did not find expected ',' or '}'", "found undefined tag handle",
		"found duplicate %YAML directive", "found incompatible YAML document",
		"found duplicate %TAG directive":
		return true
	}
	return false
}

// yamlSyntaxError turns a YAML parser error into an Error with its line.
func yamlSyntaxError(file string, err error) *Error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if isYAMLParserProblem(m[2]) {
			// yaml/v3 reports parser (not scanner) errors with 0-based
			// lines; scanner errors are 1-based.
			line++
		}
		return &Error{File: file, Line: line, Message: "YAML syntax error: " + m[2]}
	}
	return &Error{File: file, Message: "YAML syntax error: " + strings.TrimPrefix(msg, "yaml: ")}
}

// decodeDocument decodes one YAML document of file into d: its resource
// and its errors. It depends on nothing but its arguments.
func decodeDocument(d *docEffect, file string, doc *yaml.Node) {
	root := doc
	if root.Kind == yaml.DocumentNode {
		if len(root.Content) == 0 {
			return
		}
		root = root.Content[0]
	}
	for root != nil && root.Kind == yaml.AliasNode {
		root = root.Alias
	}
	if root == nil || isNull(root) {
		return // empty document
	}
	src := Source{File: file, Line: root.Line}
	if root.Kind != yaml.MappingNode {
		d.errorf(src, "", "a policy document must be a mapping with apiVersion, kind, metadata and spec; got %s", describe(root))
		return
	}
	apiVersion, avLine := topLevelString(root, "apiVersion")
	kind, kindLine := topLevelString(root, "kind")
	fields := make(map[string]int, 2)
	if avLine > 0 {
		fields["apiVersion"] = avLine
	}
	if kindLine > 0 {
		fields["kind"] = kindLine
	}
	src = src.WithFields(fields)
	switch {
	case kind == "":
		d.errorf(src, "kind", "kind is required")
		return
	case apiVersion == "":
		d.errorf(src, "apiVersion", "apiVersion is required")
		return
	}
	k := kindNamed(kind)
	if k == nil {
		group, _, _ := strings.Cut(apiVersion, "/")
		switch {
		case kindNotSupportedYet(group, kind):
			d.errorf(src, "kind", "kind %s is not supported yet", kind)
		default:
			d.errorf(src, "kind", "unknown kind %q (want %s)", kind, wantedKinds())
		}
		return
	}
	if apiVersion != k.apiVersion && !slices.Contains(k.olderVersions, apiVersion) {
		d.errorf(src, "apiVersion", "kind %s needs apiVersion %s, not %q", kind, k.apiVersion, apiVersion)
		return
	}
	d.kind = k
	k.decode(k, d, file, root)
}

// topLevelString returns a top-level scalar value and the line of its key.
func topLevelString(root *yaml.Node, key string) (string, int) {
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Value == key {
			if v.Kind == yaml.ScalarNode && !isNull(v) {
				return v.Value, k.Line
			}
			return "", k.Line
		}
	}
	return "", 0
}

// documentMeta is the metadata accepted in policy files.
type documentMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
	// Generation is the resource's generation as Kubernetes would give it:
	// the observedGeneration of its status conditions. Written in the file
	// (a tool that exports from a cluster keeps it), or 1.
	Generation int64 `json:"generation,omitempty"`
	// CreationTimestamp is when the resource was created, RFC 3339, as
	// Kubernetes writes it (a tool that exports from a cluster keeps it):
	// of routes competing for a listener or a match, the oldest wins.
	CreationTimestamp string `json:"creationTimestamp,omitempty"`
}

// document is the shape of every policy document.
type document[S any] struct {
	APIVersion string       `json:"apiVersion"`
	Kind       string       `json:"kind"`
	Metadata   documentMeta `json:"metadata"`
	Spec       S            `json:"spec"`
}

// decodedMeta is what every kind shares once decoded.
type decodedMeta struct {
	key        resourceKey
	objectMeta metav1.ObjectMeta
	source     Source
	malformed  bool
}

// decodeSpec checks a document against its Go type and decodes it. ok is
// false when the document cannot name a resource at all.
func decodeSpec[S any](d *docEffect, file string, root *yaml.Node) (*document[S], decodedMeta, bool) {
	return decodeDoc(d, file, root, func(doc *document[S]) documentMeta { return doc.Metadata })
}

// decodeDoc is decodeSpec for a document of any shape D (a Secret has no
// spec), whose metadata metaOf returns.
func decodeDoc[D any](d *docEffect, file string, root *yaml.Node, metaOf func(*D) documentMeta) (*D, decodedMeta, bool) {
	nd := newNodeDecoder(func(line int, field, message string) {
		d.errs = append(d.errs, docError{err: Error{File: file, Line: line, Field: field, Message: message,
			attr: attribution{doc: documentID{file, root.Line}}}})
	})
	generic, _ := nd.decode(root, reflect.TypeFor[D](), "", 0)
	src := Source{File: file, Line: root.Line}.WithFields(nd.lines)
	var doc D
	malformed := generic == nil
	if generic != nil {
		raw, err := json.Marshal(generic)
		if err == nil {
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.DisallowUnknownFields()
			err = dec.Decode(&doc)
		}
		if err != nil {
			d.errorf(src, "", "cannot decode document: %v", err)
			malformed = true
		}
	}
	if len(nd.dropped) > 0 {
		d.dropped, d.droppedID, d.droppedAt = nd.dropped, documentID{file, root.Line}, len(d.errs)
	}
	meta := decodedMeta{source: src, malformed: malformed}
	md := metaOf(&doc)
	name, namespace := md.Name, md.Namespace
	if namespace == "" {
		namespace = DefaultNamespace
	} else if msg := checkDNSLabel(namespace); msg != "" {
		d.errorf(src, "metadata.namespace", "invalid namespace %q: %s", namespace, msg)
	}
	if name == "" {
		d.errorf(src, "metadata.name", "name is required")
		return nil, meta, false
	}
	if msg := checkDNSLabel(name); msg != "" {
		d.errorf(src, "metadata.name", "invalid name %q: %s", name, msg)
	}
	checkLabels(d.errorf, src, "metadata.labels", md.Labels)
	generation := md.Generation
	if generation < 0 {
		d.errorf(src, "metadata.generation", "generation %d is negative (want 1 or more, or leave it out)", generation)
	}
	if generation <= 0 {
		generation = 1
	}
	var created metav1.Time
	if md.CreationTimestamp != "" {
		t, err := time.Parse(time.RFC3339, md.CreationTimestamp)
		if err != nil {
			d.errorf(src, "metadata.creationTimestamp", "invalid creationTimestamp %q: want RFC 3339, as 2026-01-02T15:04:05Z", md.CreationTimestamp)
		} else {
			created = metav1.NewTime(t.UTC())
		}
	}
	kind, _ := topLevelString(root, "kind")
	meta.key = resourceKey{kind: kind, namespace: namespace, name: name}
	meta.objectMeta = metav1.ObjectMeta{
		Name:        name,
		Namespace:   namespace,
		Labels:      md.Labels,
		Annotations: md.Annotations,
		Generation:  generation,

		CreationTimestamp: created,
	}
	return &doc, meta, true
}

// register records a resource, reporting a duplicate. It returns false when
// the resource must not be added because another one has its identity.
func (l *loader) register(meta decodedMeta) bool {
	if first, dup := l.defined[meta.key]; dup {
		l.errorf(meta.source, "metadata.name", "duplicate %s: also defined at %s:%d",
			meta.key, first.File, first.LineOf("metadata.name"))
		return false
	}
	l.defined[meta.key] = meta.source
	if meta.malformed {
		l.malformed[meta.key] = true
	}
	return true
}
