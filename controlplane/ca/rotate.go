package ca

import (
	"context"
	"fmt"
	"github.com/meshgate/meshgate/api/token"
	"time"
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
// expired by then), unless force.
func (c *CA) Rotate(ctx context.Context, step Step, force bool, maxTTL time.Duration) (Status, error) {
	if c.operator {
		return Status{}, fmt.Errorf("ca: %w", ErrOperatorRoot)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	v := c.cur.Load()
	var next *view
	switch step {
	case StepBegin:
		switch v.phase {
		case PhasePrepared:
			return c.Status(), nil
		case PhaseSwitched:
			return Status{}, fmt.Errorf("ca: begin: %w: the rotation is switched; run finish first", ErrRotationOrder)
		}
		r, err := c.generateRoot(ctx)
		if err != nil {
			return Status{}, err
		}
		next = newView(append(append([]*root{}, v.roots...), r), v.signer, PhasePrepared, time.Time{})
		c.logger.Info("root rotation begun: new root added to the trust bundle", "root", r.id, "signer", v.signer.id)
	case StepSwitch:
		switch v.phase {
		case PhaseSwitched:
			return c.Status(), nil
		case PhaseStable:
			return Status{}, fmt.Errorf("ca: switch: %w: no rotation begun; run begin first", ErrRotationOrder)
		}
		newest := v.roots[len(v.roots)-1]
		next = newView(v.roots, newest, PhaseSwitched, c.now().UTC())
		c.logger.Info("root rotation switched: the new root signs", "root", newest.id, "previous", v.signer.id)
	case StepFinish:
		switch v.phase {
		case PhaseStable:
			return Status{}, fmt.Errorf("ca: finish: %w: no rotation in progress", ErrRotationOrder)
		case PhasePrepared:
			return Status{}, fmt.Errorf("ca: finish: %w: the new root does not sign yet; run switch first", ErrRotationOrder)
		}
		if earliest := v.switchedAt.Add(maxTTL); !force && c.now().Before(earliest) {
			return Status{}, fmt.Errorf("ca: finish: %w until %s (one certificate TTL, %s, after switch); use force to drop the old root now",
				ErrFinishTooEarly, earliest.UTC().Format(time.RFC3339), maxTTL)
		}
		next = newView([]*root{v.signer}, v.signer, PhaseStable, time.Time{})
		c.logger.Info("root rotation finished: old roots dropped from the trust bundle", "signer", v.signer.id, "forced", force)
	default:
		return Status{}, fmt.Errorf("ca: unknown rotation step %q (want begin, switch or finish)", step)
	}
	p := persisted{Signer: next.signer.id, Phase: next.phase, SwitchedAt: next.switchedAt}
	for _, r := range next.roots {
		p.Roots = append(p.Roots, r.id)
	}
	if err := c.save(ctx, p); err != nil {
		return Status{}, err
	}
	c.cur.Store(next)
	if step == StepFinish {
		for _, r := range v.roots {
			if r != next.signer {
				_ = c.store.Delete(ctx, rootPrefix+r.id+".pem")
				_ = c.store.Delete(ctx, rootPrefix+r.id+".key")
			}
		}
	}
	return c.Status(), nil
}

func pinOf(r *root) string {
	return token.PinOf(r.cert.Raw)
}
