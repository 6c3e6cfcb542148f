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

// Run obtains the first certificate (unless insecure), then runs the
// proxy, with renewal beside it, until ctx is done, then stops it
// gracefully (Proxy.Run). beside, when not nil, runs for as long as the
// proxy serves (e.g. keeping a service registration): its context ends
// when the stop begins, and the listeners keep serving until it has
// returned (the registration is removed) and the drain delay has passed.
// The certificate is renewed until the proxy has stopped. Proxy.StopNow
// ends the stop at once, without waiting for beside.
func (r *Role) Run(ctx context.Context, beside func(ctx context.Context)) error {
	besideCtx, cancelBeside := context.WithCancel(ctx)
	defer cancelBeside()
	done := make(chan struct{})
	var leave func(context.Context)
	if beside == nil {
		close(done)
	} else {
		go func() {
			defer close(done)
			beside(besideCtx)
		}()
		leave = func(abort context.Context) {
			select {
			case <-done:
			case <-abort.Done():
			}
		}
	}
	var err error
	if r.Identity == nil {
		err = r.Proxy.run(ctx, leave)
	} else {
		// The identity lives until the proxy has drained, not only until
		// ctx is done; a stop while enrolling ends the enrollment.
		life, endLife := context.WithCancel(context.WithoutCancel(ctx))
		defer endLife()
		stopEnrolling := context.AfterFunc(ctx, endLife)
		err = r.Identity.Serve(life, func(context.Context) error {
			if !stopEnrolling() {
				return nil // ctx ended while enrolling: nothing to serve
			}
			return r.Proxy.run(ctx, leave)
		})
	}
	cancelBeside()
	select {
	case <-done:
	case <-r.Proxy.abort.Done():
	}
	return err
}
