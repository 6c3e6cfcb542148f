// Package policy is meshgate's unified policy model: it loads Gateway API and
// meshgate.dev resources from YAML files, validates them, and reports every
// problem with its file, line and field path. It knows nothing of xDS or the
// network.
package policy
