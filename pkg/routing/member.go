package routing

import (
	"context"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// PrivateKey is the node's libp2p identity key. The peer channel
// (pkg/peerlink) derives its TLS certificate from it, so that a TLS handshake
// proves the same peer ID as the DHT knows.
func (r *Router) PrivateKey() crypto.PrivKey { return r.host.Peerstore().PrivKey(r.self) }

// Member reports whether id is a member of the cluster: a peer this node is
// connected to over its libp2p host, which with a Secret admits only holders
// of the cluster's key. A peer that is not connected right now (a connection
// trimmed, or not made yet) is dialled at the addresses this node knows for
// it, within ctx and DialTimeout: the handshake proves both the key and the
// ID. Addresses are never taken from the one asking.
func (r *Router) Member(ctx context.Context, id peer.ID) bool {
	if id == "" || id == r.self {
		return false
	}
	if r.host.Network().Connectedness(id) == network.Connected {
		return true
	}
	if len(r.host.Peerstore().Addrs(id)) == 0 {
		return false
	}
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	return r.host.Connect(ctx, peer.AddrInfo{ID: id}) == nil
}
