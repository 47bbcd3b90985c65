package peer

import (
	"time"
)

// Fault is what a peer did wrong.
type Fault int

const (
	// Unreachable: the connection failed or the peer did not answer in time.
	Unreachable Fault = iota
	// Slow: the body stalled, trickled below the throughput floor, or ended
	// before its declared length.
	Slow
	// Liar: bytes that failed verification, or a size contradicted by a
	// trusted source.
	Liar
)

func (f Fault) String() string {
	switch f {
	case Unreachable:
		return "unreachable"
	case Slow:
		return "slow"
	case Liar:
		return "liar"
	}
	return "unknown"
}

// penalty is how long a fault keeps a peer out of look-ups.
func (c *Client) penalty(f Fault) time.Duration {
	switch f {
	case Liar:
		return c.lim.LiarPenalty
	case Slow:
		return c.lim.SlowPenalty
	}
	return c.lim.DeadPenalty
}

// blame demotes p for f. It is the only place that demotes.
func (c *Client) blame(p Provider, f Fault, err error) {
	d := c.penalty(f)
	attrs := []any{"peer", p.ID, "url", p.URL, "fault", f.String(), "for", d, "err", err}
	switch f {
	case Liar:
		c.log.Warn("peer sent bytes that failed verification, or a false size; demoted", attrs...)
	case Slow:
		c.log.Info("peer stalled, trickled or cut its body short; demoted", attrs...)
	default:
		c.log.Info("peer unreachable; demoted", attrs...)
	}
	// Unreachable and slow are what a restarting node looks like; a liar
	// stays out for its whole penalty.
	c.finder.Demote(p.ID, d, f != Liar)
	if c.onFault != nil {
		c.onFault(f)
	}
}
