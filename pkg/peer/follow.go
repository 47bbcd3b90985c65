package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/swarm"
)

// Planner is this node's part in the swarm (pkg/swarm).
type Planner interface {
	Plan(ctx context.Context, d digest.Digest, reason swarm.Reason, parent string) swarm.Plan
	Report(ctx context.Context, d digest.Digest, outcome swarm.Reason)
}

// Announcer announces and withdraws routing keys (pkg/routing).
type Announcer interface {
	Advertise(ctx context.Context, keys ...string) error
	Withdraw(ctx context.Context, keys ...string) error
}

// SwarmConfig is what a swarm source needs besides the client.
type SwarmConfig struct {
	Planner   Planner
	Announcer Announcer
	// Refused says whether a transfer's final error means the upstream
	// refused the blob (401, 403, 404), which the coordinator tells everyone.
	Refused func(error) bool
}

// errFetch: the coordinator says this node gets the blob itself; the
// transfer moves on to its next source, the upstream.
var errFetch = errors.New("this node fetches the blob itself (swarm plan)")

// Swarm is an inflight.Source that asks the blob's coordinator what to do
// and, when told to follow a node that is receiving the blob, reads it from
// that node as it arrives. It must come after the providers source (complete
// copies are better) and before the upstream (which it defers to when this
// node is to fetch).
func (c *Client) Swarm(name string, d digest.Digest) *SwarmSource {
	return &SwarmSource{c: c, cfg: c.swarm, name: name, d: d}
}

// SwarmSource: see Swarm.
type SwarmSource struct {
	c    *Client
	cfg  SwarmConfig
	name string
	d    digest.Digest

	mu        sync.Mutex
	asked     bool
	announced bool
	parent    Provider     // the node fed from, while following
	last      *guardedBody // the latest body from it
	size      int64        // the size it declared
	pending   swarm.Reason // why the next question is asked
}

func (s *SwarmSource) Kind() string  { return "peer" }
func (s *SwarmSource) Trusted() bool { return false }

func (s *SwarmSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	reason, parent, restart := s.why(off)
	s.mu.Unlock()
	if restart {
		return nil, 0, fmt.Errorf("peer %s ended one byte short: it rejected the blob: %w", parent, inflight.ErrRestart)
	}
	for range 3 {
		plan := s.cfg.Planner.Plan(ctx, s.d, reason, parent)
		switch plan.Action {
		case swarm.Declined:
			return nil, 0, fmt.Errorf("the swarm's fetcher was refused by the upstream: %w", inflight.ErrFinal)
		case swarm.Fetch:
			if plan.Alone {
				// No coordinator: a node announcing the blob in flight is
				// still better than the upstream (a split view, or the
				// coordinator gone).
				if body, size, err := s.openInflight(ctx, off); err == nil {
					return body, size, nil
				}
			}
			s.announce()
			return nil, 0, errFetch
		}
		p, err := s.c.finder.Resolve(ctx, plan.Parent)
		if err != nil {
			reason, parent = swarm.ParentFailed, plan.Parent
			continue
		}
		rctx, cancel := context.WithCancel(ctx)
		resp, err := s.c.openBlob(rctx, followHeaders, p, s.name, s.d, off)
		if err != nil {
			cancel()
			var st *statusError
			switch {
			case ctx.Err() != nil:
				return nil, 0, ctx.Err()
			case errors.As(err, &st):
				// Alive, but it cannot feed us (busy, or its transfer
				// ended): another parent.
				reason, parent = swarm.ParentRejected, plan.Parent
			default:
				if unreachable(err) {
					s.c.blame(p, Unreachable, err)
				}
				reason, parent = swarm.ParentFailed, plan.Parent
			}
			continue
		}
		return s.following(p, resp, cancel, off), size(resp, off), nil
	}
	return nil, 0, fmt.Errorf("swarm: no parent could feed this node: %w", errNoPeer)
}

// following records p as the parent the body comes from.
func (s *SwarmSource) following(p Provider, resp *http.Response, cancel context.CancelFunc, off int64) io.ReadCloser {
	body := s.c.guard(resp.Body, cancel)
	s.mu.Lock()
	s.parent, s.last, s.size = p, body, size(resp, off)
	s.mu.Unlock()
	s.announce()
	s.c.log.Debug("following a peer that is receiving the blob", "digest", s.d, "peer", p.ID, "offset", off)
	return body
}

func size(resp *http.Response, off int64) int64 {
	n, _ := totalSize(resp, off)
	return n
}

// openInflight races the nodes that announce the blob in flight.
func (s *SwarmSource) openInflight(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	lctx, stop := context.WithCancel(ctx)
	defer stop()
	provs := collect(lctx, s.c.finder.Find(lctx, InflightKey(s.d)))
	resp, p, cancel, err := s.c.race(ctx, provs, func(ctx context.Context, p Provider) (*http.Response, error) {
		return s.c.openBlob(ctx, followHeaders, p, s.name, s.d, off)
	})
	if err != nil {
		return nil, 0, err
	}
	return s.following(p, resp, cancel, off), size(resp, off), nil
}

// why is the reason for the next question: the first, or what became of the
// parent. restart says the held bytes must go first. s.mu is held.
func (s *SwarmSource) why(off int64) (reason swarm.Reason, parent string, restart bool) {
	parent = s.parent.ID
	switch {
	case !s.asked:
		s.asked = true
		return swarm.Start, "", false
	case s.pending != "":
		reason, s.pending = s.pending, ""
		return reason, parent, false
	case s.last == nil:
		return swarm.ParentFailed, parent, false
	}
	g := s.last
	s.last = nil
	if f := g.Fault(); f != nil {
		s.c.blame(s.parent, Slow, f)
		return swarm.ParentSlow, parent, false
	}
	if s.size > 0 && off == s.size-1 {
		// A parent holds the final byte until its own copy verifies, and
		// aborts when it does not: this one found the blob bad, and what it
		// relayed is bad too. Not its fault; start again elsewhere.
		s.pending = swarm.ParentRejected
		return "", parent, true
	}
	return swarm.ParentFailed, parent, false
}

// Demote: the bytes from the parent failed verification.
func (s *SwarmSource) Demote(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.parent.ID != "" {
		s.c.blame(s.parent, Liar, err)
		s.pending = swarm.ParentLied
	}
	s.last = nil
}

// announce tells peers that this node is receiving the blob, once.
func (s *SwarmSource) announce() {
	s.mu.Lock()
	done := s.announced
	s.announced = true
	s.mu.Unlock()
	if done || s.cfg.Announcer == nil {
		return
	}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), s.c.lim.SwarmAnnounce)
		defer cancel()
		s.cfg.Announcer.Advertise(ctx, InflightKey(s.d))
	}()
}

// Finished withdraws the announcement and tells the coordinator how it
// ended, before the node's readers hear of it.
func (s *SwarmSource) Finished(err error) {
	s.mu.Lock()
	asked, announced := s.asked, s.announced
	s.mu.Unlock()
	if announced && s.cfg.Announcer != nil {
		ctx, cancel := context.WithTimeout(context.Background(), s.c.lim.SwarmAnnounce)
		s.cfg.Announcer.Withdraw(ctx, InflightKey(s.d))
		cancel()
	}
	if !asked || err == nil {
		return
	}
	outcome := swarm.Failed
	if s.cfg.Refused != nil && s.cfg.Refused(err) {
		outcome = swarm.Refused
	}
	s.cfg.Planner.Report(context.Background(), s.d, outcome)
}
