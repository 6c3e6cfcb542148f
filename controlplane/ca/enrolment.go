package ca

import (
	"cmp"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Enrolment is the lineage of one proxy's certificates: it starts when the
// proxy enrols with a join token, and every renewal authenticated by a
// certificate of the lineage inherits it. The CA writes it into every
// certificate it issues to a proxy (the subject's serialNumber attribute,
// "mge1.<id>.<token id or ->.<enrolled at, Unix ms>"), signed like the rest
// of the certificate, so that revoking a token, an identity or one
// enrolment reaches the proxies' renewals without the CA keeping a record
// per certificate.
type Enrolment struct {
	// ID is 16 hex digits, random, chosen at enrolment.
	ID string `json:"id"`
	// TokenID is the join token the lineage enrolled with; empty when
	// unknown (a certificate issued before lineages were recorded).
	TokenID string `json:"tokenID,omitempty"`
	// EnrolledAt is when the lineage started (millisecond precision).
	EnrolledAt time.Time `json:"enrolledAt"`
}

// enrolmentTag starts the subject serialNumber of a certificate with a
// lineage.
const enrolmentTag = "mge1"

// NewEnrolment starts a lineage for a proxy that enrolled with the join
// token tokenID ("" when unknown) at now.
func NewEnrolment(tokenID string, now time.Time) (Enrolment, error) {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return Enrolment{}, fmt.Errorf("ca: enrolment id: %w", err)
	}
	return Enrolment{ID: hex.EncodeToString(b[:]), TokenID: tokenID, EnrolledAt: now.UTC().Truncate(time.Millisecond)}, nil
}

// subject is the certificate subject that carries e.
func (e Enrolment) subject() pkix.Name {
	return pkix.Name{SerialNumber: e.String()}
}

// String is the lineage as written into certificates.
func (e Enrolment) String() string {
	return strings.Join([]string{enrolmentTag, e.ID, cmp.Or(e.TokenID, "-"), strconv.FormatInt(e.EnrolledAt.UnixMilli(), 10)}, ".")
}

// EnrolmentOf reads the lineage of a certificate the CA issued; false when
// it carries none (or one that does not parse).
func EnrolmentOf(leaf *x509.Certificate) (Enrolment, bool) {
	return parseEnrolment(leaf.Subject.SerialNumber)
}

func parseEnrolment(s string) (Enrolment, bool) {
	parts := strings.Split(s, ".")
	if len(parts) != 4 || parts[0] != enrolmentTag || !isHexID(parts[1]) {
		return Enrolment{}, false
	}
	e := Enrolment{ID: parts[1]}
	if parts[2] != "-" {
		if !isHexID(parts[2]) {
			return Enrolment{}, false
		}
		e.TokenID = parts[2]
	}
	ms, err := strconv.ParseInt(parts[3], 10, 64)
	if err != nil || ms < 0 {
		return Enrolment{}, false
	}
	e.EnrolledAt = time.UnixMilli(ms).UTC()
	return e, true
}

// isHexID reports whether s is 16 lowercase hex digits (a token or
// enrolment id).
func isHexID(s string) bool {
	return len(s) == 16 && strings.Trim(s, "0123456789abcdef") == ""
}

// IssuedAt is when the CA issued leaf: its NotBefore plus the ClockSkew it
// was back-dated by (NotBefore has one-second precision: this may be up to
// a second early).
func IssuedAt(leaf *x509.Certificate) time.Time {
	return leaf.NotBefore.Add(ClockSkew)
}
