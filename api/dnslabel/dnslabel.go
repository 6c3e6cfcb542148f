// Package dnslabel is the one check of the names meshgate takes as DNS
// labels: namespaces, service and gateway names, port and rule names. A
// label is RFC 1123's, as Kubernetes validates it: 1 to 63 lowercase
// letters, digits and '-', starting and ending with a letter or digit. The
// policy loader, Consul discovery, the CA, join tokens and the proxies all
// accept exactly these names, so that a name one of them takes is never
// refused by another.
package dnslabel

import (
	"errors"
	"fmt"
)

// MaxLength is the longest label.
const MaxLength = 63

// The reasons Check gives.
var (
	ErrTooLong = errors.New("must be at most 63 characters")
	ErrInvalid = errors.New("must be lowercase letters, digits and '-', starting and ending with a letter or digit")
)

// Valid reports whether s is a DNS label.
func Valid(s string) bool {
	if s == "" || len(s) > MaxLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case c == '-' && i > 0 && i < len(s)-1:
		default:
			return false
		}
	}
	return true
}

// Check returns nil when s is a DNS label, else ErrTooLong or ErrInvalid.
func Check(s string) error {
	switch {
	case len(s) > MaxLength:
		return ErrTooLong
	case !Valid(s):
		return ErrInvalid
	}
	return nil
}

// CheckName checks a required name; what names it in the error ("service",
// "namespace", "gateway name"...).
func CheckName(what, name string) error {
	if name == "" {
		return fmt.Errorf("%s is required", what)
	}
	if err := Check(name); err != nil {
		return fmt.Errorf("%s %q: %w", what, name, err)
	}
	return nil
}
