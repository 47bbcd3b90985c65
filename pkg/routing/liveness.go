package routing

import (
	"context"
	"net"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	manet "github.com/multiformats/go-multiaddr/net"
)

// goneGrace is how long a peer may stay disconnected before we check whether
// it is still there. kad-dht keeps a peer in its routing table after it
// disconnects until a refresh pings it (minutes): meanwhile every query would
// try to dial it, which on a real network costs a dial timeout per look-up.
const goneGrace = time.Second

// watchPeers follows connection events: connected-peer count, mirror address
// prefetch, and the forgetting of dead peers.
func (r *Router) watchPeers(sub event.Subscription) {
	defer sub.Close()
	for {
		select {
		case <-r.ctx.Done():
			return
		case e, ok := <-sub.Out():
			if !ok {
				return
			}
			switch ev := e.(type) {
			case event.EvtPeerConnectednessChanged:
				if ev.Connectedness == network.Connected {
					r.log.Debug("peer connected", "peer", ev.Peer)
					r.setAlive(ev.Peer)
				} else {
					r.log.Debug("peer disconnected", "peer", ev.Peer)
					r.mirrors.forget(ev.Peer)
					r.forgetTold(ev.Peer)
					p := ev.Peer
					r.spawn(func() { r.checkGone(p) })
				}
				r.reportPeers()
			case event.EvtPeerIdentificationCompleted:
				// Learn its mirror address now, so a look-up that finds it
				// does not wait for the round trip.
				if slices.Contains(ev.Protocols, mirrorProtocol) {
					p := ev.Peer
					r.spawn(func() { r.mirrorURL(r.ctx, p) })
				}
				if slices.Contains(ev.Protocols, kadProtocol) {
					r.kick(r.newPeerKick)
				}
			}
		}
	}
}

// checkGone forgets a peer that stayed disconnected and no longer answers at
// its address: out of the routing table, out of queries and look-up results.
// The probe is a bare handshake (learnid.go), not a libp2p connection, so a
// peer that is alive but was disconnected on purpose (connection manager
// trimming) is left alone and not reconnected against its will; and a
// different node that took over the address does not pass for it.
func (r *Router) checkGone(p peer.ID) {
	t := time.NewTimer(goneGrace)
	defer t.Stop()
	select {
	case <-t.C:
	case <-r.ctx.Done():
		return
	}
	if r.host.Network().Connectedness(p) == network.Connected || r.answersAt(p) {
		return
	}
	r.setDead(p)
	r.dht.RoutingTable().RemovePeer(p)
	r.log.Debug("peer gone", "peer", p)
	if r.dht.RoutingTable().Size() == 0 && len(r.host.Network().Peers()) == 0 {
		r.kick(r.bootKick)
	}
}

func (r *Router) answersAt(p peer.ID) bool {
	for _, a := range r.host.Peerstore().Addrs(p) {
		na, err := manet.ToNetAddr(a)
		if err != nil {
			continue
		}
		if _, ok := na.(*net.TCPAddr); !ok {
			continue
		}
		ctx, cancel := context.WithTimeout(r.ctx, r.cfg.DialTimeout)
		id, err := learnPeerID(ctx, r.prober, r.psk, na.String())
		cancel()
		if err == nil && id == p {
			return true
		}
	}
	return false
}

func (r *Router) setDead(p peer.ID) {
	r.peersMu.Lock()
	defer r.peersMu.Unlock()
	r.dead[p] = time.Now().Add(r.cfg.ProviderTTL)
}

// setAlive records that p is connected again: no longer dead, and its
// demotions that were only until it came back (see Demote) end.
func (r *Router) setAlive(p peer.ID) {
	r.peersMu.Lock()
	defer r.peersMu.Unlock()
	delete(r.dead, p)
	if d, ok := r.demoted[p]; ok && d.untilBack {
		delete(r.demoted, p)
		r.log.Debug("peer back: demotion lifted", "peer", p)
	}
}

func (r *Router) isDead(p peer.ID) bool {
	r.peersMu.Lock()
	defer r.peersMu.Unlock()
	until, ok := r.dead[p]
	if ok && time.Now().After(until) {
		delete(r.dead, p)
		return false
	}
	return ok
}

// demotion keeps a peer out of look-ups until a time; one that is pardoned
// when the peer connects again ends then too.
type demotion struct {
	until     time.Time
	untilBack bool
}

// Demote excludes a peer from Lookup results for d: it sent bad bytes or did
// not answer. With untilBack, the demotion also ends when the peer connects
// again: a node that was unreachable or cut a body short because it was
// restarting (a rolling upgrade) is a good source once it is back, and must
// not be skipped for the rest of d. A liar is never pardoned that way.
func (r *Router) Demote(id peer.ID, d time.Duration, untilBack bool) {
	r.peersMu.Lock()
	defer r.peersMu.Unlock()
	now := time.Now()
	next := demotion{until: now.Add(d), untilBack: untilBack}
	if old, ok := r.demoted[id]; ok && now.Before(old.until) {
		// Both stand: the later end, and a reconnection lifts the whole
		// only if it would lift each.
		next.until = maxTime(next.until, old.until)
		next.untilBack = untilBack && old.untilBack
	}
	r.demoted[id] = next
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// excluded reports whether look-ups must skip p: demoted, or known dead.
func (r *Router) excluded(p peer.ID) bool {
	r.peersMu.Lock()
	defer r.peersMu.Unlock()
	now := time.Now()
	if d, ok := r.demoted[p]; ok {
		if now.Before(d.until) {
			return true
		}
		delete(r.demoted, p)
	}
	if until, ok := r.dead[p]; ok {
		if now.Before(until) {
			return true
		}
		delete(r.dead, p)
	}
	return false
}

// reportPeers calls OnPeers when the connected-peer count changed.
func (r *Router) reportPeers() {
	n := len(r.host.Network().Peers())
	r.peersMu.Lock()
	last := r.lastPeers
	r.lastPeers = n
	r.peersMu.Unlock()
	if n != last && r.cfg.OnPeers != nil {
		r.cfg.OnPeers(n)
	}
	if (last == 0) != (n == 0) {
		// The bootstrap loop may be waiting out a long interval: let it
		// notice that we joined, or re-bootstrap now that we are alone.
		r.kick(r.bootKick)
	}
}
