// Package token is the format of meshgate join tokens, shared by the control
// plane that issues them and the proxies that present them:
//
//	mgt1.<id>.<secret>.<pin>
//
// id is 16 lowercase hex digits (public: it names the token in list and
// revoke), secret is 43 base64url characters (32 random bytes; the control
// plane stores only its SHA-256), pin is 64 lowercase hex digits: the SHA-256
// of the DER of a root certificate the control plane's serving certificate
// chains to, so that a new proxy can verify the control plane before it has
// any certificate.
package token

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// Prefix starts every token of this format.
const Prefix = "mgt1"

const (
	idLen     = 16
	secretLen = 43 // base64url, no padding, of 32 bytes
	pinLen    = 64
	// maxLen bounds what Parse looks at.
	maxLen = len(Prefix) + 3 + idLen + secretLen + pinLen
)

// Token is a parsed join token.
type Token struct {
	ID     string // 16 hex digits
	Secret string // 43 base64url characters
	Pin    string // 64 hex digits: SHA-256 of a trusted root's DER
}

// New returns a fresh token pinned to the root certificate whose DER is given.
func New(rootDER []byte) (Token, error) {
	var id [8]byte
	var secret [32]byte
	if _, err := rand.Read(id[:]); err != nil {
		return Token{}, fmt.Errorf("token id: %w", err)
	}
	if _, err := rand.Read(secret[:]); err != nil {
		return Token{}, fmt.Errorf("token secret: %w", err)
	}
	return Token{
		ID:     hex.EncodeToString(id[:]),
		Secret: base64.RawURLEncoding.EncodeToString(secret[:]),
		Pin:    PinOf(rootDER),
	}, nil
}

// PinOf is the pin of a root certificate: the hex SHA-256 of its DER.
func PinOf(der []byte) string {
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:])
}

// String formats the token.
func (t Token) String() string {
	return Prefix + "." + t.ID + "." + t.Secret + "." + t.Pin
}

// SecretHash is what the control plane stores instead of the secret.
func (t Token) SecretHash() [32]byte {
	return sha256.Sum256([]byte(t.Secret))
}

// SecretMatches reports, in constant time, whether the token's secret hashes
// to the stored hash.
func (t Token) SecretMatches(stored [32]byte) bool {
	h := t.SecretHash()
	return subtle.ConstantTimeCompare(h[:], stored[:]) == 1
}

// ErrMalformed is returned (wrapped) for anything that is not a token.
var ErrMalformed = errors.New("malformed join token")

// Parse parses a token. Its errors never contain the secret.
func Parse(s string) (Token, error) {
	s = strings.TrimSpace(s)
	if len(s) > maxLen {
		return Token{}, fmt.Errorf("%w: too long", ErrMalformed)
	}
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != Prefix {
		return Token{}, fmt.Errorf("%w: want %s.<id>.<secret>.<pin>", ErrMalformed, Prefix)
	}
	t := Token{ID: parts[1], Secret: parts[2], Pin: parts[3]}
	if len(t.ID) != idLen || !isLowerHex(t.ID) {
		return Token{}, fmt.Errorf("%w: id must be %d hex digits", ErrMalformed, idLen)
	}
	if len(t.Secret) != secretLen {
		return Token{}, fmt.Errorf("%w: secret must be %d characters", ErrMalformed, secretLen)
	}
	if b, err := base64.RawURLEncoding.DecodeString(t.Secret); err != nil || len(b) != 32 {
		return Token{}, fmt.Errorf("%w: secret is not base64url of 32 bytes", ErrMalformed)
	}
	if len(t.Pin) != pinLen || !isLowerHex(t.Pin) {
		return Token{}, fmt.Errorf("%w: pin must be %d hex digits", ErrMalformed, pinLen)
	}
	return t, nil
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}
