package dataplane

import (
	"context"

	"github.com/meshgate/meshgate/dataplane/identity"
)

// Role is the part a gateway node and a sidecar share: the proxy engine and
// its identity (nil when insecure). gateway/ and mesh/ add what differs: the
// node they describe and how they register.
type Role struct {
	Proxy    *Proxy
	Identity *identity.Manager
}

// NewRole builds the proxy of a gateway or sidecar; with an identity, its
// certificate serves mTLS and the connection to the control plane.
func NewRole(opts Options, id *identity.Manager) (*Role, error) {
	if id != nil { // a nil *Manager must not become a non-nil Provider
		opts.Identity = id
		opts.XDSCredentials = id.XDSCredentials()
	}
	p, err := New(opts)
	if err != nil {
		return nil, err
	}
	return &Role{Proxy: p, Identity: id}, nil
}

// Run obtains the first certificate (unless insecure), then runs the proxy,
// with renewal beside it, until ctx is done, then drains it. beside, when not
// nil, runs for as long as the proxy (e.g. keeping a service registration)
// and is waited for before Run returns.
func (r *Role) Run(ctx context.Context, beside func(ctx context.Context)) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	if beside == nil {
		close(done)
	} else {
		go func() {
			defer close(done)
			beside(ctx)
		}()
	}
	var err error
	if r.Identity == nil {
		err = r.Proxy.Run(ctx)
	} else {
		err = r.Identity.Serve(ctx, r.Proxy.Run)
	}
	cancel()
	<-done
	return err
}
