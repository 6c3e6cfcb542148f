package policy

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Limits of an API consumers file (SecurityPolicy apiKey.consumersFile).
const (
	// MaxConsumersFileBytes bounds the file (1 MiB).
	MaxConsumersFileBytes = 1 << 20
	// maxConsumersFileLine bounds one line: a name and a hash fit many
	// times over.
	maxConsumersFileLine = 1024
)

// consumersFilePath is the path of a consumers file: as written when
// absolute, else relative to the policy file's directory.
func consumersFilePath(policyFile, name string) string {
	if filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(filepath.Dir(policyFile), name)
}

// APIKeyFileConsumers are the consumers of sp's apiKey.consumersFile as
// read and validated when the set was loaded (a last good version of the
// policy keeps those it was accepted with); nil when it has none.
func (s *Set) APIKeyFileConsumers(sp *SecurityPolicy) []APIKeyConsumer {
	if sp.Spec.APIKey == nil || sp.Spec.APIKey.ConsumersFile == "" {
		return nil
	}
	return s.APIKeyConsumerFiles[consumersFilePath(sp.Source.File, sp.Spec.APIKey.ConsumersFile)]
}

// APIKeyConsumersFiles are the consumers files the SecurityPolicies of the
// set name, sorted: a control plane watches them, and reloads the policy
// when they change.
func (s *Set) APIKeyConsumersFiles() []string {
	var out []string
	for _, sp := range s.SecurityPolicies {
		if a := sp.Spec.APIKey; a != nil && a.ConsumersFile != "" {
			out = append(out, consumersFilePath(sp.Source.File, a.ConsumersFile))
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// consumerFileReads memoizes the consumers files of one evaluation, by
// path: each is read and parsed once, whatever the number of passes.
type consumerFileReads struct {
	files map[string]consumerFileRead
}

type consumerFileRead struct {
	consumers []APIKeyConsumer
	err       error
}

// file reads and parses the consumers file at path.
func (r *consumerFileReads) file(path string) ([]APIKeyConsumer, error) {
	if got, ok := r.files[path]; ok {
		return got.consumers, got.err
	}
	consumers, err := readConsumersFile(path)
	if r.files == nil {
		r.files = map[string]consumerFileRead{}
	}
	r.files[path] = consumerFileRead{consumers, err}
	return consumers, err
}

// readConsumersFile reads a consumers file, at most MaxConsumersFileBytes.
func readConsumersFile(path string) ([]APIKeyConsumer, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	defer func() { _ = f.Close() }()
	data, err := io.ReadAll(io.LimitReader(f, MaxConsumersFileBytes+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if len(data) > MaxConsumersFileBytes {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, MaxConsumersFileBytes)
	}
	return ParseConsumersFile(path, data)
}

// ParseConsumersFile parses the consumers of an API consumers file: one
// NAME:SHA256 per line, NAME an RFC 1123 label (the consumer), SHA256 the
// 64 hex digits of the SHA-256 of one of its keys (echo -n KEY |
// sha256sum); a consumer with several keys has several lines. Blank lines
// and lines starting with # are skipped, spaces around a line ignored.
// Consumers come in the order of their first line, hashes in lower case.
// An error names path and the line, never the line's content (a key
// pasted by mistake is not repeated into logs).
func ParseConsumersFile(path string, data []byte) ([]APIKeyConsumer, error) {
	var out []APIKeyConsumer
	index := map[string]int{}  // consumer name → out index
	hashAt := map[string]int{} // hash → line
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 256), maxConsumersFileLine)
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimSpace(sc.Text())
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		name, hash, ok := strings.Cut(text, ":")
		name, hash = strings.TrimSpace(name), strings.ToLower(strings.TrimSpace(hash))
		switch {
		case !ok:
			return nil, fmt.Errorf("%s:%d: want NAME:SHA256 (the consumer, a colon, the SHA-256 of its key in hex)", path, line)
		case checkDNSLabel(name) != "":
			return nil, fmt.Errorf("%s:%d: the consumer name is not an RFC 1123 label (lower case letters, digits, '-'; at most 63)", path, line)
		case !isSHA256Hex(hash):
			return nil, fmt.Errorf("%s:%d: consumer %q: want 64 hex digits after the colon, the SHA-256 of the key (echo -n KEY | sha256sum)", path, line, name)
		}
		if first, dup := hashAt[hash]; dup {
			return nil, fmt.Errorf("%s:%d: consumer %q: the same key hash as line %d", path, line, name, first)
		}
		hashAt[hash] = line
		i, seen := index[name]
		if !seen {
			if len(out) == maxAPIConsumers {
				return nil, fmt.Errorf("%s:%d: more than %d consumers", path, line, maxAPIConsumers)
			}
			i = len(out)
			index[name] = i
			out = append(out, APIKeyConsumer{Name: name})
		}
		out[i].SHA256s = append(out[i].SHA256s, hash)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s:%d: %w", path, line+1, err)
	}
	return out, nil
}

// checkConsumersFile reads sp's apiKey.consumersFile (once per
// evaluation; a last good version of the policy keeps the consumers it
// was accepted with) and records its consumers in the set. names and
// hashes are the policy's own consumers (name, hash → index): a consumer
// of the file may not be one of them, or of the Secret, nor share a key.
func (l *loader) checkConsumersFile(sp *SecurityPolicy, a *APIKeyAuthentication, names, hashes map[string]int) {
	const field = "spec.apiKey.consumersFile"
	src := sp.Source
	path := consumersFilePath(src.File, a.ConsumersFile)
	if consumers, ok := l.lastGoodConsumers[path]; ok && l.lastGoodSecurity[sp] {
		l.addConsumersFile(path, consumers)
		return
	}
	if l.consumerFiles == nil {
		l.consumerFiles = &consumerFileReads{}
	}
	consumers, err := l.consumerFiles.file(path)
	if err != nil {
		l.errorf(src, field, "%v", err)
		return
	}
	if len(consumers)+len(a.Consumers)+len(a.SecretConsumers) == 0 {
		l.errorf(src, field, "%s holds no consumer (and the policy names none)", path)
		return
	}
	secret := map[string]bool{}
	for _, c := range a.SecretConsumers {
		secret[c.Name] = true
		for _, h := range c.SHA256s {
			secret["\x00"+h] = true
		}
	}
	bad := false
	for _, c := range consumers {
		if j, dup := names[c.Name]; dup {
			l.errorf(src, field, "%s: consumer %q is also spec.apiKey.consumers[%d]", path, c.Name, j)
			bad = true
		} else if secret[c.Name] {
			l.errorf(src, field, "%s: consumer %q is also in the Secret of spec.apiKey.secretRef", path, c.Name)
			bad = true
		}
		for _, h := range c.SHA256s {
			if j, dup := hashes[h]; dup {
				l.errorf(src, field, "%s: consumer %q has the same key hash as spec.apiKey.consumers[%d]", path, c.Name, j)
				bad = true
			} else if secret["\x00"+h] {
				l.errorf(src, field, "%s: consumer %q has the same key hash as a consumer of the Secret of spec.apiKey.secretRef", path, c.Name)
				bad = true
			}
		}
	}
	if !bad {
		l.addConsumersFile(path, consumers)
	}
}

// addConsumersFile records the consumers read at path in the set.
func (l *loader) addConsumersFile(path string, consumers []APIKeyConsumer) {
	if l.set.APIKeyConsumerFiles == nil {
		l.set.APIKeyConsumerFiles = map[string][]APIKeyConsumer{}
	}
	l.set.APIKeyConsumerFiles[path] = consumers
}
