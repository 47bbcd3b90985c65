package routing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// swarmProtocol carries the swarm's small requests (pkg/swarm): one request,
// one answer, on a stream of the PSK-gated, authenticated host, so a
// coordinator knows for certain which member asks. Nodes that do not speak it
// (older versions) are not swarm members.
const swarmProtocol = protocol.ID("/shoal/swarm/1.0.0")

// maxSwarmMessage bounds both directions.
const maxSwarmMessage = 4 << 10

// swarmStreamTimeout bounds one exchange on the server side.
const swarmStreamTimeout = 5 * time.Second

// ServeSwarm answers swarm requests with h, and so makes this node a swarm
// member in its peers' eyes. Call it once, at start-up.
func (r *Router) ServeSwarm(h func(from string, msg []byte) ([]byte, error)) {
	r.host.SetStreamHandler(swarmProtocol, func(s network.Stream) {
		defer s.Close()
		s.SetDeadline(time.Now().Add(swarmStreamTimeout))
		msg, err := io.ReadAll(io.LimitReader(s, maxSwarmMessage+1))
		if err != nil || len(msg) > maxSwarmMessage {
			s.Reset()
			return
		}
		ans, err := h(s.Conn().RemotePeer().String(), msg)
		if err != nil {
			r.log.Debug("swarm request refused", "peer", s.Conn().RemotePeer(), "err", err)
			s.Reset()
			return
		}
		s.Write(ans)
	})
}

// SwarmMembers lists the connected peers that speak the swarm protocol.
func (r *Router) SwarmMembers() []string {
	var out []string
	for _, p := range r.host.Network().Peers() {
		if p != r.self && r.speaksSwarm(p) {
			out = append(out, p.String())
		}
	}
	return out
}

func (r *Router) speaksSwarm(p peer.ID) bool {
	ok, _ := r.host.Peerstore().SupportsProtocols(p, swarmProtocol)
	return len(ok) > 0
}

// AskSwarm sends one swarm request to a peer and returns its answer.
func (r *Router) AskSwarm(ctx context.Context, to string, msg []byte) ([]byte, error) {
	id, err := peer.Decode(to)
	if err != nil {
		return nil, err
	}
	s, err := r.host.NewStream(network.WithAllowLimitedConn(ctx, "swarm"), id, swarmProtocol)
	if err != nil {
		return nil, fmt.Errorf("swarm stream to %s: %w", id, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	if _, err := s.Write(msg); err != nil {
		s.Reset()
		return nil, err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return nil, err
	}
	ans, err := io.ReadAll(io.LimitReader(s, maxSwarmMessage+1))
	if err != nil {
		return nil, err
	}
	if len(ans) > maxSwarmMessage {
		return nil, errors.New("swarm answer too long")
	}
	return ans, nil
}

// Resolve returns a peer's mirror URL, asking the peer when it is not known.
func (r *Router) Resolve(ctx context.Context, id string) (Provider, error) {
	p, err := peer.Decode(id)
	if err != nil {
		return Provider{}, err
	}
	u, err := r.mirrorURL(ctx, p)
	if err != nil {
		return Provider{}, err
	}
	return Provider{ID: p, MirrorURL: u}, nil
}

// SelfID is this node's peer ID.
func (r *Router) SelfID() string { return r.self.String() }
