// Package xdsnode is the node contract of docs/xds.md ("Who a proxy is"):
// the node id convention and the typed node metadata, shared by the
// proxies that send them, the control plane that reads and checks them, and
// the load generator that imitates proxies.
package xdsnode

// IDPrefix is how every node id of a proxy starts: "<role>~<name>~" in the
// default namespace, else "<role>~<name>.<namespace>~". The control plane
// refuses a stream whose node id does not start with the prefix of the
// identity in its certificate, so that no proxy can take another's node id
// (the key of its configuration).
func IDPrefix(role, name, namespace string) string {
	if namespace == "" || namespace == "default" {
		return role + "~" + name + "~"
	}
	return role + "~" + name + "." + namespace + "~"
}
