package swarm

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/limits"
)

// Net is what the swarm needs from the peer-to-peer layer (pkg/routing).
type Net interface {
	// Self is this node's peer ID.
	Self() string
	// Members are the live peers that speak the swarm protocol, without self.
	Members() []string
	// Ask sends one request to a peer's swarm handler and returns its answer.
	Ask(ctx context.Context, to string, req []byte) ([]byte, error)
}

// MaxMessage bounds a request or an answer on the wire.
const MaxMessage = 4 << 10

// Config configures a Swarm.
type Config struct {
	Net    Net
	Limits limits.Limits
	Logger *slog.Logger
}

// Swarm is one node's part in every blob's swarm: it asks blobs'
// coordinators for plans, and coordinates the blobs it wins.
type Swarm struct {
	net  Net
	lim  limits.Limits
	book *book
	log  *slog.Logger
}

// New returns a node's swarm.
func New(cfg Config) *Swarm {
	lim := cfg.Limits.WithDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Swarm{net: cfg.Net, lim: lim, log: cfg.Logger,
		book: newBook(lim.SwarmFanout, lim.SwarmMemory, lim.SwarmRefused, lim.SwarmBlobs)}
}

// Active reports whether this node has swarm peers: only then do its
// transfers need to be shareable.
func (s *Swarm) Active() bool { return len(s.net.Members()) > 0 }

// Plan asks d's coordinator what to do, for the given reason (Start, or what
// went wrong with parent). When the coordinator cannot answer in time, the
// node fetches by itself.
func (s *Swarm) Plan(ctx context.Context, d digest.Digest, reason Reason, parent string) Plan {
	p, err := s.ask(ctx, Request{Digest: d, Reason: reason, Parent: parent})
	if err != nil {
		s.log.Info("swarm: no plan from the coordinator; on its own", "digest", d, "reason", reason, "err", err)
		return Plan{Action: Fetch, Alone: true}
	}
	s.log.Debug("swarm plan", "digest", d, "reason", reason, "parent", parent, "action", p.Action, "follow", p.Parent)
	switch p.Action {
	case Fetch, Declined:
		return p
	case Follow:
		if p.Parent != "" && p.Parent != s.net.Self() {
			return p
		}
	}
	s.log.Warn("swarm: the coordinator's plan makes no sense; on its own", "digest", d, "plan", p)
	return Plan{Action: Fetch, Alone: true}
}

// Report tells d's coordinator how this node's transfer ended. It is best
// effort: a coordinator that does not hear it recovers when others ask.
func (s *Swarm) Report(ctx context.Context, d digest.Digest, outcome Reason) {
	if _, err := s.ask(ctx, Request{Digest: d, Reason: outcome}); err != nil {
		s.log.Debug("swarm: report not delivered", "digest", d, "outcome", outcome, "err", err)
	}
}

func (s *Swarm) ask(ctx context.Context, req Request) (Plan, error) {
	self := s.net.Self()
	coord := Coordinator(self, s.net.Members(), req.Digest)
	if coord == self {
		return s.book.decide(self, req), nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.lim.SwarmAsk)
	defer cancel()
	b, err := json.Marshal(req)
	if err != nil {
		return Plan{}, err
	}
	ans, err := s.net.Ask(ctx, coord, b)
	if err != nil {
		return Plan{}, fmt.Errorf("coordinator %s: %w", coord, err)
	}
	var p Plan
	if len(ans) > MaxMessage || json.Unmarshal(ans, &p) != nil {
		return Plan{}, fmt.Errorf("coordinator %s: %w", coord, errBadMessage)
	}
	return p, nil
}

var errBadMessage = errors.New("malformed swarm message")

// Handle answers a request from peer from (the swarm protocol's server side).
// A request for a blob this node does not coordinate in its own view is
// answered all the same: views differ for a moment when members come and
// go, and an answer is better than none.
func (s *Swarm) Handle(from string, msg []byte) ([]byte, error) {
	var req Request
	if len(msg) > MaxMessage || json.Unmarshal(msg, &req) != nil || req.Digest.Validate() != nil || !known(req.Reason) {
		return nil, errBadMessage
	}
	return json.Marshal(s.book.decide(from, req))
}

func known(r Reason) bool {
	switch r {
	case Start, ParentFailed, ParentSlow, ParentLied, ParentRejected, Done, Refused, Failed:
		return true
	}
	return false
}
