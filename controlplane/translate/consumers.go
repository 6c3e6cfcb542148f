package translate

import (
	"fmt"

	xdstypev3 "github.com/cncf/xds/go/xds/type/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshgate/meshgate/controlplane/model"
)

// Consumers on the wire (docs/xds.md "Consumers").
const (
	// ConsumersFilterName is meshgate's filter naming the declared JWT
	// consumers (SecurityPolicy spec.jwt.providers[].consumers), right
	// after the JWT filter.
	ConsumersFilterName = "meshgate.consumers"
	// ConsumersTypeURL is the type_url of its TypedStruct.
	ConsumersTypeURL = "meshgate.dev/filters.http.consumers.v1.Consumers"
)

// consumersHTTPFilter is the consumers filter of a listener: the declared
// consumers of every JWT provider of the listener's and its routes'
// authentications, {jwt: [{provider, subject, consumer}]} in provider
// then declaration order; nil when none declares one (the filter is not
// there and costs nothing).
func consumersHTTPFilter(listener *model.Authentication, routes []*model.Authentication) (*hcmv3.HttpFilter, error) {
	var entries []any
	seen := map[string]bool{}
	for _, a := range append([]*model.Authentication{listener}, routes...) {
		if a == nil {
			continue
		}
		for _, p := range a.JWT {
			if seen[p.Name] {
				continue
			}
			seen[p.Name] = true
			for _, c := range p.Consumers {
				entries = append(entries, map[string]any{"provider": p.Name, "subject": c.Subject, "consumer": c.Name})
			}
		}
	}
	if len(entries) == 0 {
		return nil, nil
	}
	value, err := structpb.NewStruct(map[string]any{"jwt": entries})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ConsumersFilterName, err)
	}
	typed, err := deterministicAny(&xdstypev3.TypedStruct{TypeUrl: ConsumersTypeURL, Value: value})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ConsumersFilterName, err)
	}
	return &hcmv3.HttpFilter{Name: ConsumersFilterName, IsOptional: true,
		ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: typed}}, nil
}
