package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// petsAPI is a small valid OpenAPI 3 document.
const petsAPI = `openapi: 3.0.3
info: {title: pets, version: "1"}
paths:
  /pets:
    get:
      parameters: [{name: limit, in: query, schema: {type: integer, maximum: 100}}]
      responses: {"200": {description: ok}}
`

// TestRequestValidation: the document is read (relative to the policy
// file) and validated at load; every problem is an error naming the
// policy file, line and field, and the document's own error.
func TestRequestValidation(t *testing.T) {
	t.Parallel()
	route := `[{kind: HTTPRoute, name: shop, sectionName: checkout}]`
	inline := "  requestValidation:\n    openAPI:\n      inline: |\n" + indent(petsAPI, "        ")
	tests := []struct {
		name, targets, sections string
		want                    []string
	}{
		{"file", route, "  requestValidation: {openAPI: {file: pets.yaml}, maxBodyBytes: 4096, responseValidation: ReportOnly}\n", nil},
		{"inline", route, inline, nil},
		{"whole route", `[{kind: HTTPRoute, name: shop}]`, "  requestValidation: {openAPI: {file: pets.yaml}}\n", nil},
		{"missing file", route, "  requestValidation: {openAPI: {file: nope.yaml}}\n",
			[]string{"tp.yaml:6: spec.requestValidation.openAPI.file: reading ", "nope.yaml: no such file"}},
		{"broken document", route, "  requestValidation:\n    openAPI: {file: broken.yaml}\n",
			[]string{"tp.yaml:7: spec.requestValidation.openAPI.file: ", "broken.yaml: invalid OpenAPI document", `unsupported 'type' value "integr"`}},
		{"swagger 2", route, "  requestValidation: {openAPI: {inline: \"swagger: '2.0'\"}}\n",
			[]string{"spec.requestValidation.openAPI.inline: "}},
		{"both", route, "  requestValidation: {openAPI: {file: pets.yaml, inline: x}}\n",
			[]string{"spec.requestValidation.openAPI: exactly one of file and inline is required"}},
		{"neither", route, "  requestValidation: {openAPI: {}}\n",
			[]string{"spec.requestValidation.openAPI: exactly one of file and inline is required"}},
		{"gateway target", `[{kind: Gateway, name: edge}]`, "  requestValidation: {openAPI: {file: pets.yaml}}\n",
			[]string{"spec.requestValidation: requestValidation applies to HTTPRoute targets only (spec.targetRefs[0] is a Gateway)"}},
		{"bad limits", route, "  requestValidation: {openAPI: {file: pets.yaml}, maxBodyBytes: 0, responseValidation: Enforce}\n",
			[]string{"spec.requestValidation.maxBodyBytes: 0 bytes: want 1 to 16777216", `spec.requestValidation.responseValidation: "Enforce": want Off or ReportOnly`}},
		{"unknown field", route, "  requestValidation: {openAPI: {path: pets.yaml}}\n", []string{"path"}},
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "pets.yaml"), petsAPI)
	writeFile(t, filepath.Join(dir, "broken.yaml"), strings.Replace(petsAPI, "type: integer", "type: integr", 1))
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			set, err := LoadFiles(File{Name: filepath.Join(dir, "base.yaml"), Data: []byte(trafficBase)},
				File{Name: filepath.Join(dir, "tp.yaml"), Data: []byte(trafficPolicy(tt.targets, tt.sections))})
			if len(tt.want) == 0 {
				if err != nil {
					t.Fatalf("Load: %v", err)
				}
				if doc := set.OpenAPIDocument(set.TrafficPolicies[0]); !strings.Contains(string(doc), "/pets") {
					t.Fatalf("OpenAPIDocument = %q, want the document", doc)
				}
				return
			}
			if err == nil {
				t.Fatalf("Load: no error, want %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("errors:\n%v\nwant one containing %q", err, w)
				}
			}
		})
	}
}

// TestRequestValidationLastGood: a document changed on disk is read again
// by the next evaluation (the policy's own text unchanged, so its decoded
// resource reused by a Cache); a document broken on disk rejects the
// policy, whose last good version keeps serving the document it was
// accepted with; the file stays watched.
func TestRequestValidationLastGood(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	doc := filepath.Join(dir, "pets.yaml")
	writeFile(t, doc, petsAPI)
	files := []File{{Name: filepath.Join(dir, "base.yaml"), Data: []byte(trafficBase)},
		{Name: filepath.Join(dir, "tp.yaml"), Data: []byte(trafficPolicy(`[{kind: HTTPRoute, name: shop}]`,
			"  requestValidation: {openAPI: {file: pets.yaml}}\n"))}}
	first := Evaluate(Input{Files: files})
	if len(first.Errors) != 0 || first.Set == nil {
		t.Fatalf("first: %v", first.Errors)
	}
	if got := first.Set.WatchedFiles(); len(got) != 1 || got[0] != doc {
		t.Fatalf("WatchedFiles = %v, want [%s]", got, doc)
	}
	changed := strings.Replace(petsAPI, "maximum: 100", "maximum: 1000", 1)
	writeFile(t, doc, changed)
	cache := NewCache()
	if _, err := cache.LoadFiles(files...); err != nil {
		t.Fatal(err)
	}
	reloaded := cache.Evaluate(Input{Files: files, LastGood: first.Set})
	if got := string(reloaded.Set.OpenAPIDocument(reloaded.Set.TrafficPolicies[0])); got != changed {
		t.Fatalf("after the change, document = %q, want the changed one", got)
	}
	writeFile(t, doc, "openapi: 3.0.3\npaths: [")
	second := cache.Evaluate(Input{Files: files, LastGood: reloaded.Set})
	if len(second.Errors) == 0 || !strings.Contains(second.Errors.Error(), "spec.requestValidation.openAPI.file") {
		t.Fatalf("second errors = %v, want the document's", second.Errors)
	}
	if second.Set == nil || len(second.Set.TrafficPolicies) != 1 {
		t.Fatalf("second set has no TrafficPolicy: the last good one must be kept")
	}
	if got := string(second.Set.OpenAPIDocument(second.Set.TrafficPolicies[0])); got != changed {
		t.Errorf("kept document = %q, want the last good one", got)
	}
	if got := second.Set.WatchedFiles(); len(got) != 1 || got[0] != doc {
		t.Errorf("WatchedFiles = %v, want [%s]", got, doc)
	}
}

func indent(s, prefix string) string {
	lines := strings.Split(strings.TrimSuffix(s, "\n"), "\n")
	return prefix + strings.Join(lines, "\n"+prefix) + "\n"
}

func writeFile(t *testing.T, name, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}
