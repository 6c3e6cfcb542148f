package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"go.yaml.in/yaml/v3"

	"github.com/meshgate/meshgate/controlplane/xds"
)

// xdsTypeNames are the short names of the xDS types, in the order the
// proxies table shows them.
var xdsTypeNames = []struct{ short, typeURL string }{
	{"LDS", resourcev3.ListenerType},
	{"RDS", resourcev3.RouteType},
	{"CDS", resourcev3.ClusterType},
	{"EDS", resourcev3.EndpointType},
	{"SDS", resourcev3.SecretType},
}

// shortTypeName is LDS, RDS... for a type URL, else the URL.
func shortTypeName(typeURL string) string {
	for _, t := range xdsTypeNames {
		if t.typeURL == typeURL {
			return t.short
		}
	}
	return typeURL
}

// proxyView is one proxy as meshgate proxies shows it.
type proxyView struct {
	ID          string    `json:"id"`
	Role        string    `json:"role"`
	Namespace   string    `json:"namespace"`
	Name        string    `json:"name"`
	Address     string    `json:"address,omitempty"`
	Peer        string    `json:"peer,omitempty"`
	SPIFFEID    string    `json:"spiffeID,omitempty"`
	CertExpires time.Time `json:"certExpires,omitzero"`
	MTLSMode    string    `json:"mtlsMode,omitempty"`
	ConnectedAt time.Time `json:"connectedAt,omitzero"`
	// Versions by short type name (LDS, RDS, CDS, EDS, SDS).
	Versions map[string]typeVersion `json:"versions"`
	InSync   bool                   `json:"inSync"`
	Held     string                 `json:"held,omitempty"`
	LastNack *nackView              `json:"lastNack,omitempty"`
	// Enrolment and TokenID: the certificate's lineage and join token.
	Enrolment string `json:"enrolment,omitempty"`
	TokenID   string `json:"tokenID,omitempty"`
}

// typeVersion is what a proxy holds of one xDS type.
type typeVersion struct {
	// Acked is the version the proxy accepted last, Served the one the
	// control plane serves it now.
	Acked  string `json:"acked,omitempty"`
	Served string `json:"served,omitempty"`
	// Rejected is the error of its last answer to the type, when that
	// answer was a rejection.
	Rejected string `json:"rejected,omitempty"`
}

// nackView is a proxy's last rejection of a configuration.
type nackView struct {
	Type    string    `json:"type"`
	Version string    `json:"version,omitempty"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

func newProxyView(p xds.ProxyStatus) proxyView {
	v := proxyView{ID: p.ID, Role: p.Role, Namespace: p.Namespace, Name: p.Name, Address: p.Address, Peer: p.Peer,
		SPIFFEID: p.SPIFFEID, CertExpires: p.CertNotAfter, MTLSMode: p.MTLSMode, ConnectedAt: p.ConnectedAt,
		Versions: map[string]typeVersion{}, InSync: p.InSync, Held: p.Held, Enrolment: p.Enrolment, TokenID: p.TokenID}
	for _, m := range []map[string]string{p.Acked, p.Served, p.Nacked} {
		for typeURL := range m {
			v.Versions[shortTypeName(typeURL)] = typeVersion{Acked: p.Acked[typeURL], Served: p.Served[typeURL], Rejected: p.Nacked[typeURL]}
		}
	}
	if n := p.LastNack; n != nil {
		v.LastNack = &nackView{Type: shortTypeName(n.TypeURL), Version: n.Version, Error: n.Error, At: n.At}
	}
	return v
}

// syncState is the SYNC column: yes, no, or held.
func (v proxyView) syncState() string {
	switch {
	case v.Held != "":
		return "held"
	case v.InSync:
		return "yes"
	}
	return "no"
}

// shortVersion is the first 8 digits of a version, "-" for none.
func shortVersion(version string) string {
	if version == "" {
		return "-"
	}
	return version[:min(len(version), 8)]
}

// printProxies writes the proxies as a table: the versions each accepted
// (8 digits; a type rejected last is marked "!"), whether it is in sync,
// its last NACK.
func printProxies(w io.Writer, views []proxyView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	head := []string{"ID", "ROLE", "NAME", "ADDRESS", "IDENTITY", "CERT-EXPIRES", "MTLS"}
	for _, t := range xdsTypeNames {
		head = append(head, t.short)
	}
	head = append(head, "SYNC", "LAST-NACK", "HELD", "ENROLMENT", "TOKEN")
	fmt.Fprintln(tw, strings.Join(head, "\t"))
	for _, v := range views {
		row := []string{v.ID, v.Role, v.Namespace + "/" + v.Name, cmp.Or(v.Address, "-"), cmp.Or(v.SPIFFEID, "-"),
			formatTime(v.CertExpires), cmp.Or(v.MTLSMode, "-")}
		for _, t := range xdsTypeNames {
			tv := v.Versions[t.short]
			cell := shortVersion(tv.Acked)
			if tv.Rejected != "" {
				cell += "!"
			}
			row = append(row, cell)
		}
		nack := "-"
		if n := v.LastNack; n != nil {
			nack = fmt.Sprintf("%s %s at %s: %s", n.Type, shortVersion(n.Version), formatTime(n.At), oneLine(n.Error))
		}
		row = append(row, v.syncState(), nack, cmp.Or(v.Held, "-"), cmp.Or(v.Enrolment, "-"), cmp.Or(v.TokenID, "-"))
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// oneLine is s on one line, at most 200 characters.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 200 {
		s = s[:197] + "..."
	}
	return s
}

// checkOutputFormat accepts -o table, json or yaml ("" and "text": table).
func checkOutputFormat(command, output string) error {
	switch output {
	case "", "table", "text", "json", "yaml":
		return nil
	}
	return &exitError{code: 2, err: fmt.Errorf("%s: unknown -o %q (want table, json or yaml)", command, output)}
}

// writeStructured writes v as indented JSON or as YAML (through its JSON
// form: the field names of its JSON tags).
func writeStructured(w io.Writer, output string, v any) error {
	raw, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if output == "json" {
		_, err = fmt.Fprintln(w, string(raw))
		return err
	}
	var generic any
	if err := json.Unmarshal(raw, &generic); err != nil {
		return err
	}
	out, err := yaml.Marshal(generic)
	if err != nil {
		return err
	}
	_, err = w.Write(out)
	return err
}
