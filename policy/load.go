package policy

import "errors"

// Load reads policy resources from files and directories (every *.yaml and
// *.yml file in a directory, not recursive), validates them as one set, and
// returns the set, or an ErrorList naming every problem found.
// TODO: placeholder until the loader lands.
func Load(paths ...string) (*Set, error) {
	return nil, errors.New("policy.Load: not implemented")
}
