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
	level := c.log.Info
	if f == Liar {
		level = c.log.Warn
	}
	level("peer demoted", "peer", p.ID, "url", p.URL, "fault", f.String(), "for", d, "err", err)
	c.finder.Demote(p.ID, d)
	if c.onFault != nil {
		c.onFault(f)
	}
}
