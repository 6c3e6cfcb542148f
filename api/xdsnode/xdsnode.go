// Package xdsnode is the node id convention of docs/xds.md, shared by the
// proxies that choose their node ids and the control plane that checks them.
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
