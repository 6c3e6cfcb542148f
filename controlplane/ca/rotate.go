package ca

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/meshgate/meshgate/api/token"
)

// RootInfo describes one root of the trust bundle.
type RootInfo struct {
	ID        string    `json:"id"`
	SHA256    string    `json:"sha256"`
	Subject   string    `json:"subject"`
	NotBefore time.Time `json:"notBefore"`
	NotAfter  time.Time `json:"notAfter"`
	Signer    bool      `json:"signer"`
	PEM       string    `json:"pem"`
}

// Status is the CA's state, as GET /ca and `meshgate ca status` show it.
type Status struct {
	Phase Phase `json:"phase"`
	// Signer is the id of the root that signs.
	Signer string     `json:"signer"`
	Roots  []RootInfo `json:"roots"`
	// SwitchedAt is when the current rotation's switch happened.
	SwitchedAt *time.Time `json:"switchedAt,omitempty"`
	// Operator is true when the root comes from --ca-cert/--ca-key.
	Operator bool `json:"operator"`
}

// Status reports the CA's state.
func (c *CA) Status() Status {
	v := c.cur.Load()
	st := Status{Phase: v.phase, Signer: v.signer.id, Operator: c.operator}
	if !v.switchedAt.IsZero() {
		t := v.switchedAt
		st.SwitchedAt = &t
	}
	for _, r := range v.roots {
		st.Roots = append(st.Roots, RootInfo{
			ID:        r.id,
			SHA256:    pinOf(r),
			Subject:   r.cert.Subject.String(),
			NotBefore: r.cert.NotBefore,
			NotAfter:  r.cert.NotAfter,
			Signer:    r == v.signer,
			PEM:       string(r.certPEM),
		})
	}
	return st
}

// Rotate performs one root rotation step and returns the new status.
// Repeating the step just done is a no-op; a step out of order is refused
// with ErrRotationOrder. Finish is refused with ErrFinishTooEarly until
// maxTTL has passed since Switch (every certificate the old root signed has
// expired by then), unless force. With a store shared by several replicas,
// the step holds the CA lock and starts from the state in the store (which
// another replica may have moved on), not from this replica's copy.
func (c *CA) Rotate(ctx context.Context, step Step, force bool, maxTTL time.Duration) (Status, error) {
	if c.operator {
		return Status{}, fmt.Errorf("ca: %w", ErrOperatorRoot)
	}
	switch step {
	case StepBegin, StepSwitch, StepFinish:
	default:
		return Status{}, fmt.Errorf("ca: unknown rotation step %q (want begin, switch or finish)", step)
	}
	var changed bool
	err := c.withLock(ctx, func(ctx context.Context) error {
		v, err := c.read(ctx, c.cur.Load())
		if err == nil && v == nil {
			err = fmt.Errorf("ca: %s is gone from the state store", stateKey)
		}
		if err != nil {
			return err
		}
		if !v.same(c.cur.Load()) {
			c.cur.Store(v) // another replica moved on: start from there
			changed = true
		}
		next, err := c.nextView(ctx, v, step, force, maxTTL)
		if err != nil || next == nil {
			return err
		}
		if err := c.save(ctx, next.persisted()); err != nil {
			return err
		}
		c.cur.Store(next)
		changed = true
		if step == StepFinish {
			for _, r := range v.roots {
				if r != next.signer {
					_ = c.store.Delete(ctx, rootPrefix+r.id+".pem")
					_ = c.store.Delete(ctx, rootPrefix+r.id+".key")
				}
			}
		}
		return nil
	})
	if changed {
		c.notify()
	}
	if err != nil {
		return Status{}, err
	}
	return c.Status(), nil
}

// nextView is the view after step from v: nil when the step was the last
// one done (a no-op).
func (c *CA) nextView(ctx context.Context, v *view, step Step, force bool, maxTTL time.Duration) (*view, error) {
	switch step {
	case StepBegin:
		switch v.phase {
		case PhasePrepared:
			return nil, nil
		case PhaseSwitched:
			return nil, fmt.Errorf("ca: begin: %w: the rotation is switched; run finish first", ErrRotationOrder)
		}
		r, err := c.generateRoot(ctx)
		if err != nil {
			return nil, err
		}
		c.logger.Info("root rotation begun: new root added to the trust bundle", "root", r.id, "signer", v.signer.id)
		return newView(append(slices.Clone(v.roots), r), v.signer, PhasePrepared, time.Time{}), nil
	case StepSwitch:
		switch v.phase {
		case PhaseSwitched:
			return nil, nil
		case PhaseStable:
			return nil, fmt.Errorf("ca: switch: %w: no rotation begun; run begin first", ErrRotationOrder)
		}
		newest := v.roots[len(v.roots)-1]
		c.logger.Info("root rotation switched: the new root signs", "root", newest.id, "previous", v.signer.id)
		return newView(v.roots, newest, PhaseSwitched, c.now().UTC()), nil
	default: // StepFinish
		switch v.phase {
		case PhaseStable:
			return nil, fmt.Errorf("ca: finish: %w: no rotation in progress", ErrRotationOrder)
		case PhasePrepared:
			return nil, fmt.Errorf("ca: finish: %w: the new root does not sign yet; run switch first", ErrRotationOrder)
		}
		if earliest := v.switchedAt.Add(maxTTL); !force && c.now().Before(earliest) {
			return nil, fmt.Errorf("ca: finish: %w until %s (one certificate TTL, %s, after switch); use force to drop the old root now",
				ErrFinishTooEarly, earliest.UTC().Format(time.RFC3339), maxTTL)
		}
		c.logger.Info("root rotation finished: old roots dropped from the trust bundle", "signer", v.signer.id, "forced", force)
		return newView([]*root{v.signer}, v.signer, PhaseStable, time.Time{}), nil
	}
}

func pinOf(r *root) string {
	return token.PinOf(r.cert.Raw)
}
