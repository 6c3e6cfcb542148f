package state

import (
	"context"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"testing"
)

func stores(t *testing.T) map[string]Store {
	t.Helper()
	f, err := OpenFile(filepath.Join(t.TempDir(), "data"))
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Store{"file": f, "memory": NewMemory()}
}

func TestStoreContract(t *testing.T) {
	t.Parallel()
	for name, s := range stores(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			if _, err := s.Get(ctx, "ca/state.json"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get missing = %v, want ErrNotFound", err)
			}
			puts := map[string]string{"ca/roots/a.pem": "A", "ca/roots/b.pem": "B", "tokens/x.json": "X", "admin-token": "T"}
			for k, v := range puts {
				if err := s.Put(ctx, k, []byte(v)); err != nil {
					t.Fatalf("Put %s: %v", k, err)
				}
			}
			if err := s.Put(ctx, "ca/roots/a.pem", []byte("A2")); err != nil {
				t.Fatal(err)
			}
			got, err := s.Get(ctx, "ca/roots/a.pem")
			if err != nil || string(got) != "A2" {
				t.Fatalf("Get after overwrite = %q, %v", got, err)
			}
			list, err := s.List(ctx, "ca/roots/")
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]byte{"ca/roots/a.pem": []byte("A2"), "ca/roots/b.pem": []byte("B")}
			if !maps.EqualFunc(list, want, func(a, b []byte) bool { return string(a) == string(b) }) {
				t.Fatalf("List = %q, want %q", list, want)
			}
			all, err := s.List(ctx, "")
			if err != nil || len(all) != 4 {
				t.Fatalf("List all = %d keys, %v; want 4", len(all), err)
			}
			if err := s.Delete(ctx, "ca/roots/b.pem"); err != nil {
				t.Fatal(err)
			}
			if err := s.Delete(ctx, "ca/roots/b.pem"); err != nil {
				t.Fatalf("Delete twice: %v", err)
			}
			if _, err := s.Get(ctx, "ca/roots/b.pem"); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get deleted = %v", err)
			}
		})
	}
}

func TestValidateKey(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key string
		ok  bool
	}{
		{"ca/roots/0123.pem", true},
		{"admin-token", true},
		{"", false},
		{"/etc/passwd", false},
		{"../escape", false},
		{"ca/../../x", false},
		{"ca//x", false},
		{"ca/.tmp-1", false},
		{"ca/x y", false},
		{`ca\x`, false},
	}
	for _, tt := range tests {
		err := ValidateKey(tt.key)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateKey(%q) = %v, want ok=%v", tt.key, err, tt.ok)
		}
	}
	s := NewMemory()
	if err := s.Put(context.Background(), "../x", nil); err == nil {
		t.Error("Put with a bad key succeeded")
	}
}

func TestFileModes(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "state")
	f, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Put(context.Background(), "ca/roots/a.key", []byte("secret")); err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{
		dir:                                  0o700 | os.ModeDir,
		filepath.Join(dir, "ca", "roots"):    0o700 | os.ModeDir,
		filepath.Join(dir, "ca/roots/a.key"): 0o600,
	} {
		st, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != want {
			t.Errorf("%s mode = %v, want %v", path, st.Mode(), want)
		}
	}
	entries, err := os.ReadDir(filepath.Join(dir, "ca", "roots"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("temp files left behind: %v %v", entries, err)
	}
	// A second store over the same directory sees the value.
	g, err := OpenFile(dir)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := g.Get(context.Background(), "ca/roots/a.key"); err != nil || string(b) != "secret" {
		t.Fatalf("reopened Get = %q, %v", b, err)
	}
}
