package token

import (
	"errors"
	"strings"
	"testing"
)

func TestRoundTrip(t *testing.T) {
	tok, err := New([]byte("root der"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := Parse(tok.String())
	if err != nil {
		t.Fatalf("Parse(%q): %v", tok, err)
	}
	if got != tok {
		t.Fatalf("round trip: %+v != %+v", got, tok)
	}
	if !got.SecretMatches(tok.SecretHash()) {
		t.Error("secret does not match its own hash")
	}
	other, _ := New([]byte("root der"))
	if other.SecretMatches(tok.SecretHash()) {
		t.Error("another token's secret matches")
	}
	if tok.Pin != PinOf([]byte("root der")) {
		t.Error("pin is not the root's")
	}
}

func TestParseRejects(t *testing.T) {
	good, _ := New([]byte("x"))
	parts := strings.Split(good.String(), ".")
	cases := map[string]string{
		"empty":        "",
		"garbage":      "hello",
		"wrong prefix": "mgt2." + strings.Join(parts[1:], "."),
		"three parts":  strings.Join(parts[:3], "."),
		"five parts":   good.String() + ".x",
		"short id":     parts[0] + ".abc." + parts[2] + "." + parts[3],
		"upper id":     parts[0] + "." + strings.ToUpper(parts[1]) + "X." + parts[2] + "." + parts[3],
		"bad secret":   parts[0] + "." + parts[1] + "." + strings.Repeat("!", 43) + "." + parts[3],
		"short pin":    parts[0] + "." + parts[1] + "." + parts[2] + ".abcd",
		"huge":         strings.Repeat("a", 10000),
	}
	for name, s := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := Parse(s)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Parse = %v, want ErrMalformed", err)
			}
			if strings.Contains(err.Error(), parts[2]) {
				t.Fatal("error leaks the secret")
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	good, _ := New([]byte("x"))
	f.Add(good.String())
	f.Add("mgt1...")
	f.Add("")
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(tok.String())
		if err != nil || again != tok {
			t.Fatalf("accepted %q but its formatting does not parse back: %v", s, err)
		}
	})
}
