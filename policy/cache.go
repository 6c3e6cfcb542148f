package policy

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"
)

// Cache is Load and LoadFiles that reuse the decoding of documents seen in
// the previous load: a control plane reloads its whole policy on every
// change, and a change usually touches one document among thousands.
//
// A load through a Cache returns exactly what Load or LoadFiles returns for
// the same input: the same Set and the same errors, in the same order. A
// document is reused when it is byte for byte the one the previous load saw
// in the file of the same name, starting on the same line (every Source and
// error carries its line). Parsing, and decoding into resources, is what is
// saved; duplicate detection and validation still run over the whole set on
// every load.
//
// Documents are found in the text: a line that is exactly "---", possibly
// followed by spaces and a comment, starts one. A file with anything unusual
// for that (directives, "..." document end markers, other lines starting with
// "---", a byte-order mark, CR line ends, characters YAML rejects or treats as
// line breaks), one whose documents do not parse on their own exactly as
// they do in the file (a YAML syntax error, an alias to an anchor of an
// earlier document), is decoded whole as Load does; it is reused only when
// its whole contents are unchanged.
//
// The Cache holds only what the last load used. The Sets it returns share
// their resources (the *Service and so on) with the Sets of other loads:
// they must not be modified (validation and model compilation only read
// them). A Cache may be used by one goroutine at a time; its methods
// serialise callers with a mutex, so concurrent calls are safe but do not
// run in parallel. A nil *Cache caches nothing: its methods are Load and
// LoadFiles.
type Cache struct {
	mu sync.Mutex
	// docs holds, by file and first line, the documents of the last load
	// read from their text alone.
	docs map[documentID]*cachedDoc
	// files holds, by name, the files of the last load decoded whole.
	files map[string]*cachedFile
	// decoded counts the documents decoded rather than reused, for tests.
	decoded int
}

// cachedDoc is one document's text and what it contributes to a load; eff
// is nil for text without a document (comments before the first "---").
type cachedDoc struct {
	text string
	eff  *docEffect
}

// cachedFile is a file decoded whole: its contents and effect.
type cachedFile struct {
	data string
	eff  *fileEffect
}

// NewCache returns an empty Cache.
func NewCache() *Cache {
	return &Cache{}
}

// Load is policy.Load through the cache.
func (c *Cache) Load(paths ...string) (*Set, error) {
	if c == nil {
		return Load(paths...)
	}
	files, errs := readPaths(paths)
	return c.load(Input{Files: files, ReadErrors: errs})
}

// LoadFiles is policy.LoadFiles through the cache.
func (c *Cache) LoadFiles(files ...File) (*Set, error) {
	if c == nil {
		return LoadFiles(files...)
	}
	return c.load(Input{Files: files})
}

// LoadInput is policy.LoadInput through the cache: the files' documents
// are reused as by LoadFiles (the Services are values, never decoded).
func (c *Cache) LoadInput(in Input) (*Set, error) {
	if c == nil {
		return LoadInput(in)
	}
	in.LastGood = nil
	return c.load(in)
}

// Evaluate is policy.Evaluate through the cache.
func (c *Cache) Evaluate(in Input) *Result {
	if c == nil {
		return Evaluate(in)
	}
	var r *Result
	c.do(func(decode func(File) *fileEffect) { r = evaluate(in, decode, true) })
	return r
}

func (c *Cache) load(in Input) (set *Set, err error) {
	c.do(func(decode func(File) *fileEffect) { set, err = load(in, decode) })
	return set, err
}

// do runs f with the cache's decoding, under its lock, and keeps what it
// used for the next load.
func (c *Cache) do(f func(decode func(File) *fileEffect)) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cl := &cacheLoad{
		c:     c,
		docs:  make(map[documentID]*cachedDoc, len(c.docs)),
		files: make(map[string]*cachedFile, len(c.files)),
	}
	f(cl.decodeFile)
	// Keep only what this load used.
	c.docs, c.files = cl.docs, cl.files
}

// cacheLoad is one load through a Cache: it collects what the next load
// may reuse.
type cacheLoad struct {
	c     *Cache
	docs  map[documentID]*cachedDoc
	files map[string]*cachedFile
}

// decodeFile is decodeFile through the cache.
func (cl *cacheLoad) decodeFile(f File) *fileEffect {
	if chunks, ok := splitDocuments(f.Data); ok {
		if fe, ok := cl.decodeChunks(f.Name, chunks); ok {
			return fe
		}
	}
	if cf := cl.c.files[f.Name]; cf != nil && cf.data == string(f.Data) {
		cl.files[f.Name] = cf
		return cf.eff
	}
	fe := decodeFile(f)
	cl.c.decoded += len(fe.docs)
	cl.files[f.Name] = &cachedFile{data: string(f.Data), eff: fe}
	return fe
}

// decodeChunks decodes the documents of a file one by one, reusing those of
// the last load. ok is false when a document does not parse on its own
// (then the file must be decoded whole: only the whole file's parse says
// which error is reported, and where).
//
// When every document parses on its own, parsing the file gives the same
// documents: each "---" line is a real document start (the parser cannot be
// inside a quoted or flow scalar there without an error in the document
// before it, and block scalars end at column 0), and the parser starts each
// document afresh (no directives), except for anchors, which yaml.v3 keeps
// from one document to the next; an alias to an earlier document's anchor
// fails to parse on its own.
func (cl *cacheLoad) decodeChunks(file string, chunks []chunk) (*fileEffect, bool) {
	fe := &fileEffect{docs: make([]*docEffect, 0, len(chunks))}
	for _, ch := range chunks {
		id := documentID{file, ch.line}
		cd := cl.c.docs[id]
		if cd == nil || cd.text != string(ch.text) {
			eff, ok := decodeChunk(file, ch)
			if !ok {
				return nil, false
			}
			if eff != nil {
				cl.c.decoded++
			}
			cd = &cachedDoc{text: string(ch.text), eff: eff}
		}
		// A document that parses on its own is right to reuse whenever all
		// of its file's documents do, even if this file must be decoded
		// whole now.
		cl.docs[id] = cd
		if cd.eff != nil {
			fe.docs = append(fe.docs, cd.eff)
		}
	}
	return fe, true
}

// decodeChunk parses and decodes the text of one document. eff is nil when
// the text holds no document, which only the text before the first "---"
// may do; ok is false when the text does not parse, alone, as one document.
func decodeChunk(file string, ch chunk) (eff *docEffect, ok bool) {
	defer func() {
		if r := recover(); r != nil {
			eff, ok = nil, false // decodeFile reports it
		}
	}()
	dec := yaml.NewDecoder(bytes.NewReader(ch.text))
	var doc yaml.Node
	err := dec.Decode(&doc)
	if errors.Is(err, io.EOF) {
		return nil, !ch.explicit
	}
	if err != nil {
		return nil, false
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, false
	}
	shiftLines(&doc, ch.line-1)
	eff = &docEffect{}
	decodeDocument(eff, file, &doc)
	return eff, true
}

// shiftLines adds by to the line of every node under n, for a document
// parsed out of its file.
func shiftLines(n *yaml.Node, by int) {
	if by == 0 {
		return
	}
	// Every node is in the Content of one parent; an alias node's target
	// is reached through its own parent, not through the alias.
	stack := []*yaml.Node{n}
	for len(stack) > 0 {
		n := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		n.Line += by
		stack = append(stack, n.Content...)
	}
}

// chunk is the text of one document: from its "---" line (or the start of
// the file) to the next "---" line.
type chunk struct {
	line     int  // 1-based line of its first byte
	explicit bool // it starts with a "---" line
	text     []byte
}

// splitDocuments cuts a file into the text of its documents. ok is false
// when the file has anything that could make that differ from what the YAML
// parser does: then it is decoded whole.
func splitDocuments(data []byte) (chunks []chunk, ok bool) {
	if !plainText(data) {
		return nil, false
	}
	start, startLine, explicit := 0, 1, false
	line := 1
	for pos := 0; pos < len(data); line++ {
		end := bytes.IndexByte(data[pos:], '\n')
		if end < 0 {
			end = len(data)
		} else {
			end += pos
		}
		text := data[pos:end]
		switch {
		case len(text) > 0 && text[0] == '%', bytes.HasPrefix(text, []byte("...")):
			return nil, false // a directive, or a document end marker
		case bytes.HasPrefix(text, []byte("---")):
			if !isDocumentStart(text) {
				return nil, false
			}
			if pos > start {
				chunks = append(chunks, chunk{line: startLine, explicit: explicit, text: data[start:pos]})
			}
			start, startLine, explicit = pos, line, true
		}
		pos = end + 1
	}
	if start < len(data) {
		chunks = append(chunks, chunk{line: startLine, explicit: explicit, text: data[start:]})
	}
	return chunks, true
}

// isDocumentStart reports whether a line is "---", optionally followed by
// spaces and then, optionally, a comment.
func isDocumentStart(line []byte) bool {
	rest := line[3:]
	if len(rest) == 0 {
		return true
	}
	if rest[0] != ' ' {
		return false
	}
	rest = bytes.TrimLeft(rest, " ")
	return len(rest) == 0 || rest[0] == '#'
}

// plainText reports whether data is UTF-8 without a byte-order mark, CR,
// characters the YAML reader rejects, or characters it takes as line breaks
// (NEL, LS, PS): text whose lines are its "\n"-separated lines for the
// parser too, and whose errors cannot be found ahead of the document being
// parsed (the reader checks characters ahead of the parser).
func plainText(data []byte) bool {
	for i := 0; i < len(data); {
		b := data[i]
		if b < utf8.RuneSelf {
			if b != '\t' && b != '\n' && (b < 0x20 || b > 0x7e) {
				return false
			}
			i++
			continue
		}
		r, size := utf8.DecodeRune(data[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			return false
		case r < 0xa0, r == 0x2028, r == 0x2029, r == 0xfeff,
			r > 0xd7ff && r < 0xe000, r == 0xfffe, r == 0xffff:
			return false
		}
		i += size
	}
	return true
}
