// Package examples holds the policy files of the quickstart (embedded in the
// binary so that `meshgate dev` works from any directory) and the demo service.
package examples

import "embed"

// Quickstart holds examples/quickstart/*.yaml.
//
//go:embed quickstart/*.yaml
var Quickstart embed.FS
