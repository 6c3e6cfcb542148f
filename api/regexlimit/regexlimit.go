// Package regexlimit bounds the regular expressions meshgate accepts, a
// contract between the control plane, which refuses larger ones in policy,
// and the proxy, which NACKs them in xDS. Go's RE2 matches in linear time,
// but compiling costs time and memory in proportion to the program: a policy
// or a control plane must not be able to make a proxy spend seconds or
// hundreds of megabytes on one regex (".{1000}" is about a thousand
// instructions).
package regexlimit

import (
	"errors"
	"fmt"
	"regexp/syntax"
)

const (
	// MaxBytes bounds the length of a regex.
	MaxBytes = 16 << 10
	// MaxProgramSize bounds the estimated number of instructions of a
	// compiled regex.
	MaxProgramSize = 20000
)

// Errors of Check, wrapped with details.
var (
	ErrTooLong    = errors.New("regex longer than the limit")
	ErrTooComplex = errors.New("regex program too large")
)

// Check reports whether pattern is within MaxBytes and MaxProgramSize; a
// syntax error is returned as it is (a *syntax.Error).
func Check(pattern string) error {
	if len(pattern) > MaxBytes {
		return fmt.Errorf("%w of %d bytes", ErrTooLong, MaxBytes)
	}
	parsed, err := syntax.Parse(pattern, syntax.Perl)
	if err != nil {
		return err
	}
	if ProgramSize(parsed) > MaxProgramSize {
		return fmt.Errorf("%w (more than %d instructions): simplify it", ErrTooComplex, MaxProgramSize)
	}
	return nil
}

// ProgramSize estimates the number of instructions of re's compiled program,
// capped just above MaxProgramSize.
func ProgramSize(re *syntax.Regexp) int {
	const limit = MaxProgramSize + 1
	size := 0
	switch re.Op {
	case syntax.OpLiteral:
		size = len(re.Rune)
	case syntax.OpCharClass:
		size = 1 + len(re.Rune)/16 // a class with many ranges weighs more
	case syntax.OpRepeat:
		n := re.Max
		if n < 0 {
			n = re.Min
		}
		size = 1 + ProgramSize(re.Sub[0])*max(n, 1)
	case syntax.OpStar, syntax.OpPlus, syntax.OpQuest:
		size = 1 + ProgramSize(re.Sub[0])
	case syntax.OpCapture:
		size = 2 + ProgramSize(re.Sub[0])
	case syntax.OpConcat, syntax.OpAlternate:
		for _, sub := range re.Sub {
			size += 1 + ProgramSize(sub)
			if size >= limit {
				break
			}
		}
	default:
		size = 1
	}
	return min(size, limit)
}
