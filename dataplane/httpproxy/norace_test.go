//go:build !race

package httpproxy

// raceEnabled: see race_test.go.
const raceEnabled = false
