package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// keyHash is the hex SHA-256 of an API key.
func keyHash(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])
}

// TestParseConsumersFile: NAME:SHA256 lines, a consumer's several keys on
// several lines, comments and blank lines skipped, hashes lowercased;
// every error names the file and line, never the line's content.
func TestParseConsumersFile(t *testing.T) {
	t.Parallel()
	a, b, c := keyHash("key-a"), keyHash("key-b"), keyHash("key-c")
	tests := []struct {
		name, data string
		want       []APIKeyConsumer
		wantErr    string
	}{
		{name: "good", data: "# consumers\n\nacme:" + a + "\n  globex : " + strings.ToUpper(b) + "  \nacme:" + c + "\n",
			want: []APIKeyConsumer{{Name: "acme", SHA256s: []string{a, c}}, {Name: "globex", SHA256s: []string{b}}}},
		{name: "empty", data: "# nobody yet\n", want: nil},
		{name: "no colon", data: "acme:" + a + "\nsecret-key-pasted-here\n", wantErr: "c.txt:2: want NAME:SHA256"},
		{name: "bad name", data: "Acme_Corp:" + a + "\n", wantErr: "c.txt:1: the consumer name is not an RFC 1123 label"},
		{name: "plaintext key", data: "acme:my-secret-key\n", wantErr: `c.txt:1: consumer "acme": want 64 hex digits`},
		{name: "same hash twice", data: "acme:" + a + "\n#\nglobex:" + a + "\n", wantErr: `c.txt:3: consumer "globex": the same key hash as line 1`},
		{name: "line too long", data: "acme:" + strings.Repeat("a", 2000) + "\n", wantErr: "c.txt:1: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := ParseConsumersFile("/etc/c.txt", []byte(tt.data))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				for _, secret := range []string{"secret-key-pasted-here", "my-secret-key"} {
					if strings.Contains(err.Error(), secret) {
						t.Errorf("the error repeats the line's content: %v", err)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.want) {
				t.Errorf("consumers = %v, want %v", got, tt.want)
			}
		})
	}
}

// consumersFilePolicy is a Gateway and a SecurityPolicy reading its
// consumers from file (and inline ones: inline).
func consumersFilePolicy(file, inline string) string {
	return `apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge}
spec:
  listeners: [{name: http, port: 8080, protocol: HTTP}]
---
apiVersion: meshgate.dev/v1alpha1
kind: SecurityPolicy
metadata: {name: keys}
spec:
  targetRefs: [{group: gateway.networking.k8s.io, kind: Gateway, name: edge}]
  apiKey:
    consumersFile: ` + file + "\n" + inline
}

// TestAPIKeyConsumersFile: the file is read relative to the policy file
// (or absolute) and watched; a file that is missing, broken, empty with
// no other consumer, or that repeats a consumer or key of the policy
// rejects the policy with an error naming the policy's file, line and
// field, and the consumers file and its line.
func TestAPIKeyConsumersFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "good.txt"), "acme:"+keyHash("key-a")+"\n")
	writeFile(t, filepath.Join(dir, "broken.txt"), "acme:"+keyHash("key-a")+"\nglobex\n")
	writeFile(t, filepath.Join(dir, "empty.txt"), "# nobody\n")
	inlineAcme := "    consumers: [{name: acme, sha256: [" + keyHash("key-b") + "]}]\n"
	inlineSameKey := "    consumers: [{name: other, sha256: [" + keyHash("key-a") + "]}]\n"
	tests := []struct {
		name, file, inline string
		want               []string
	}{
		{name: "relative", file: "good.txt"},
		{name: "absolute", file: filepath.Join(dir, "good.txt")},
		{name: "missing", file: "nope.txt", want: []string{"p.yaml:13: spec.apiKey.consumersFile: reading " + filepath.Join(dir, "nope.txt") + ": "}},
		{name: "broken", file: "broken.txt", want: []string{"p.yaml:13: spec.apiKey.consumersFile: " + filepath.Join(dir, "broken.txt") + ":2: want NAME:SHA256"}},
		{name: "empty", file: "empty.txt", want: []string{"spec.apiKey.consumersFile: " + filepath.Join(dir, "empty.txt") + " holds no consumer"}},
		{name: "empty with inline", file: "empty.txt", inline: inlineAcme},
		{name: "consumer also inline", file: "good.txt", inline: inlineAcme,
			want: []string{`spec.apiKey.consumersFile: ` + filepath.Join(dir, "good.txt") + `: consumer "acme" is also spec.apiKey.consumers[0]`}},
		{name: "key also inline", file: "good.txt", inline: inlineSameKey,
			want: []string{`consumer "acme" has the same key hash as spec.apiKey.consumers[0]`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, err := LoadFiles(File{Name: filepath.Join(dir, "p.yaml"), Data: []byte(consumersFilePolicy(tt.file, tt.inline))})
			if len(tt.want) > 0 {
				if err == nil {
					t.Fatalf("no error, want %q", tt.want)
				}
				for _, w := range tt.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("errors:\n%v\nwant one containing %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := set.APIKeyFileConsumers(set.SecurityPolicies[0])
			if tt.file == "empty.txt" {
				if len(got) != 0 {
					t.Errorf("consumers = %v, want none", got)
				}
			} else if len(got) != 1 || got[0].Name != "acme" || got[0].SHA256s[0] != keyHash("key-a") {
				t.Errorf("consumers = %v, want acme's", got)
			}
			if w := set.WatchedFiles(); !slices.Contains(w, filepath.Join(dir, tt.file)) && !slices.Contains(w, tt.file) {
				t.Errorf("WatchedFiles = %v, want the consumers file", w)
			}
		})
	}
}

// TestAPIKeyConsumersFileLastGood: a consumers file changed on disk is
// read again by the next evaluation (the policy's text unchanged, its
// decoded resource reused by a Cache); a file broken on disk rejects the
// policy, whose last good version keeps the consumers it was accepted
// with; the file stays watched, and fixed, it is read again.
func TestAPIKeyConsumersFileLastGood(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "consumers.txt")
	writeFile(t, path, "acme:"+keyHash("key-a")+"\n")
	files := []File{{Name: filepath.Join(dir, "p.yaml"), Data: []byte(consumersFilePolicy("consumers.txt", ""))}}
	cache := NewCache()
	first := cache.Evaluate(Input{Files: files})
	if len(first.Errors) != 0 || first.Set == nil {
		t.Fatalf("first: %v", first.Errors)
	}
	names := func(s *Set) string {
		var out []string
		for _, c := range s.APIKeyFileConsumers(s.SecurityPolicies[0]) {
			out = append(out, c.Name)
		}
		return strings.Join(out, ",")
	}
	writeFile(t, path, "globex:"+keyHash("key-b")+"\n")
	changed := cache.Evaluate(Input{Files: files, LastGood: first.Set})
	if len(changed.Errors) != 0 || names(changed.Set) != "globex" {
		t.Fatalf("after the change: consumers %q, errors %v; want globex's", names(changed.Set), changed.Errors)
	}
	writeFile(t, path, "globex:"+keyHash("key-b")+"\ninitech:not-a-hash\n")
	broken := cache.Evaluate(Input{Files: files, LastGood: changed.Set})
	if len(broken.Errors) != 1 || !strings.Contains(broken.Errors.Error(), "p.yaml:13: spec.apiKey.consumersFile: "+path+`:2: consumer "initech": want 64 hex digits`) {
		t.Fatalf("broken: errors %v, want the file's line 2", broken.Errors)
	}
	if broken.Set == nil || len(broken.Set.SecurityPolicies) != 1 || names(broken.Set) != "globex" {
		t.Fatalf("broken: the last good policy with its consumers must be kept, got %+v", broken.Set)
	}
	if w := broken.Set.WatchedFiles(); !slices.Equal(w, []string{path}) {
		t.Errorf("WatchedFiles = %v, want [%s]", w, path)
	}
	writeFile(t, path, "initech:"+keyHash("key-c")+"\n")
	fixed := cache.Evaluate(Input{Files: files, LastGood: broken.Set})
	if len(fixed.Errors) != 0 || names(fixed.Set) != "initech" {
		t.Fatalf("fixed: consumers %q, errors %v; want initech's", names(fixed.Set), fixed.Errors)
	}
}
