package filters

import (
	"errors"
	"fmt"

	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// The router (envoy.extensions.filters.http.router.v3.Router) is the
// terminal filter of every chain: every registry knows it, and the proxy
// runs it itself (dataplane/httpproxy: route actions, then the upstream),
// after the filters Chain returns. It has no per-route config, and its
// config is the empty Router.

// checkRouter accepts the router's config: an empty Router.
func checkRouter(typed *anypb.Any) error {
	var cfg routerv3.Router
	if err := typed.UnmarshalTo(&cfg); err != nil {
		return fmt.Errorf("typed_config: %w", err)
	}
	if !proto.Equal(&cfg, &routerv3.Router{}) {
		return errors.New("only an empty Router is supported")
	}
	return nil
}
