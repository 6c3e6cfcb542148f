package dnslabel

import (
	"errors"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/validation"
)

func TestCheck(t *testing.T) {
	cases := []struct {
		name string
		in   string
		want error
	}{
		{"letters", "orders", nil},
		{"digits and dash", "v2-orders-1", nil},
		{"one character", "a", nil},
		{"digit first", "1st", nil},
		{"63 characters", strings.Repeat("a", 63), nil},
		{"64 characters", strings.Repeat("a", 64), ErrTooLong},
		{"empty", "", ErrInvalid},
		{"upper case", "Orders", ErrInvalid},
		{"leading dash", "-orders", ErrInvalid},
		{"trailing dash", "orders-", ErrInvalid},
		{"underscore", "orders_v2", ErrInvalid},
		{"dot", "orders.shop", ErrInvalid},
		{"slash", "shop/orders", ErrInvalid},
		{"non-ASCII", "ordérs", ErrInvalid},
		{"space", "or ders", ErrInvalid},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := Check(tc.in); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
				t.Fatalf("Check(%q) = %v, want %v", tc.in, err, tc.want)
			}
			if got := Valid(tc.in); got != (tc.want == nil) {
				t.Fatalf("Valid(%q) = %v", tc.in, got)
			}
			// The same rule as Kubernetes' (which the Gateway API names follow).
			if k8s := len(validation.IsDNS1123Label(tc.in)) == 0; k8s != Valid(tc.in) {
				t.Fatalf("Valid(%q) = %v, but Kubernetes says %v", tc.in, Valid(tc.in), k8s)
			}
		})
	}
}

func TestCheckName(t *testing.T) {
	cases := []struct{ name, want string }{
		{"orders", ""},
		{"", "service is required"},
		{"Orders", `service "Orders": must be lowercase letters`},
	}
	for _, tc := range cases {
		err := CheckName("service", tc.name)
		if tc.want == "" {
			if err != nil {
				t.Errorf("CheckName(%q) = %v", tc.name, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("CheckName(%q) = %v, want %q...", tc.name, err, tc.want)
		}
	}
}

// FuzzValid: the label check agrees with Kubernetes' on any input.
func FuzzValid(f *testing.F) {
	for _, s := range []string{"orders", "-a", "a-", "A", "", strings.Repeat("x", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if k8s := len(validation.IsDNS1123Label(s)) == 0; k8s != Valid(s) {
			t.Fatalf("Valid(%q) = %v, Kubernetes says %v", s, Valid(s), k8s)
		}
	})
}
