package routing

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// minBackoff is the first retry delay while this node has no peers; it
// doubles up to BootstrapInterval.
const minBackoff = 250 * time.Millisecond

// errSelf: the address is this node's own (Kubernetes lists every pod,
// ourselves included).
var errSelf = errors.New("address is this node")

// bootState is owned by the bootstrap goroutine.
type bootState struct {
	ids        map[string]peer.ID // learned peer ID per address
	failing    map[string]bool    // addresses whose last attempt failed
	sourceErr  bool               // Bootstrap itself failing
	connected  []string           // addresses connected after the last round
	loggedLone bool               // "no peers yet" said at info
}

// bootstrapLoop polls Bootstrap every BootstrapInterval and connects to every
// address it is not connected to yet. While the node has no peers it retries
// sooner, backing off from minBackoff to BootstrapInterval, and it is woken at
// once when the routing table empties.
func (r *Router) bootstrapLoop() {
	st := &bootState{ids: map[string]peer.ID{}, failing: map[string]bool{}}
	backoff := minBackoff
	hadPeers := false
	for {
		if r.cfg.Bootstrap != nil {
			r.bootstrapOnce(st)
		}
		has := r.hasPeers()
		wait := r.cfg.BootstrapInterval
		switch {
		case has:
			backoff = minBackoff
			if !hadPeers {
				r.log.Info("p2p: joined the cluster", "peers", len(r.host.Network().Peers()))
				st.loggedLone = false
				// Records announced while alone live only here: tell the new
				// neighbourhood now rather than at the next reprovide.
				r.kick(r.reprovideKick)
			}
		default:
			if !st.loggedLone {
				r.log.Info("p2p: no peers yet; this node serves alone until one appears")
				st.loggedLone = true
			} else {
				r.log.Debug("p2p: still no peers", "retry_in", backoff)
			}
			if r.cfg.Bootstrap != nil {
				wait = backoff
				backoff = min(backoff*2, r.cfg.BootstrapInterval)
			}
		}
		hadPeers = has
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.bootKick:
			t.Stop()
		case <-r.ctx.Done():
			t.Stop()
			return
		}
	}
}

func (r *Router) hasPeers() bool {
	return r.dht.RoutingTable().Size() > 0 || len(r.host.Network().Peers()) > 0
}

func (r *Router) bootstrapOnce(st *bootState) {
	ctx, cancel := context.WithTimeout(r.ctx, r.cfg.BootstrapInterval)
	defer cancel()
	addrs, err := r.cfg.Bootstrap(ctx)
	switch {
	case err != nil && !st.sourceErr:
		r.log.Warn("p2p: bootstrap addresses unavailable", "err", err)
		st.sourceErr = true
	case err != nil:
		r.log.Debug("p2p: bootstrap addresses still unavailable", "err", err)
	case st.sourceErr:
		r.log.Info("p2p: bootstrap addresses available again", "count", len(addrs))
		st.sourceErr = false
	}
	addrs = slices.Clone(addrs) // the source's own slice: sorting it in place would race its owner
	slices.Sort(addrs)
	addrs = slices.Compact(addrs)
	addrs = slices.DeleteFunc(addrs, func(a string) bool { return a == r.listenAddr() })
	r.listed.Store(int64(len(addrs)))
	addrs = r.dialSubset(addrs)

	type result struct {
		addr string
		id   peer.ID
		err  error
	}
	results := make([]result, len(addrs))
	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelism)
	for i, a := range addrs {
		known := st.ids[a]
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			id, err := r.connectAddr(ctx, a, known)
			results[i] = result{a, id, err}
		})
	}
	wg.Wait()

	var connected []string
	newPeers := false
	for _, res := range results {
		if res.id != "" {
			st.ids[res.addr] = res.id
		}
		switch {
		case errors.Is(res.err, errSelf):
		case res.err != nil:
			if !st.failing[res.addr] {
				r.log.Warn("p2p: cannot reach bootstrap peer", "addr", res.addr, "err", res.err)
				st.failing[res.addr] = true
			} else {
				r.log.Debug("p2p: bootstrap peer still unreachable", "addr", res.addr, "err", res.err)
			}
		default:
			if st.failing[res.addr] {
				r.log.Info("p2p: bootstrap peer reachable again", "addr", res.addr, "peer", res.id)
			}
			delete(st.failing, res.addr)
			connected = append(connected, res.addr)
			if !slices.Contains(st.connected, res.addr) {
				newPeers = true
			}
		}
	}
	// Forget state for addresses the source no longer lists.
	for a := range st.ids {
		if _, ok := slices.BinarySearch(addrs, a); !ok {
			delete(st.ids, a)
			delete(st.failing, a)
		}
	}
	if !slices.Equal(connected, st.connected) {
		r.log.Info("p2p: bootstrap", "connected", len(connected), "listed", len(addrs))
		st.connected = connected
	}
	if newPeers {
		// A self-lookup through the new peers fills the routing table with
		// the rest of the cluster, so later look-ups need one hop.
		r.dht.RefreshRoutingTable()
	}
}

// dialBudget is how many listed nodes bootstrap connects to: half the
// connection manager's low water mark, since as many others dial this node,
// so that bootstrap and trimming never fight.
func (r *Router) dialBudget() int { return max(r.cfg.Limits.P2PConns/2, 1) }

// knowsCluster reports whether bootstrap connects to every listed node, so
// that the connected peers are the whole cluster (provide.go relies on it).
func (r *Router) knowsCluster() bool { return r.listed.Load() <= int64(r.dialBudget()) }

// dialSubset keeps at most dialBudget addresses of a sorted list: the ones
// first in an order that is stable for this node and different on each
// (sorted by a hash of this node's ID and the address), so that the cluster
// stays one connected mesh and rounds do not churn connections.
func (r *Router) dialSubset(addrs []string) []string {
	n := r.dialBudget()
	if len(addrs) <= n {
		return addrs
	}
	rank := func(a string) [32]byte { return sha256.Sum256([]byte(string(r.self) + "|" + a)) }
	sub := slices.Clone(addrs)
	slices.SortFunc(sub, func(a, b string) int {
		ra, rb := rank(a), rank(b)
		return bytes.Compare(ra[:], rb[:])
	})
	sub = sub[:n]
	slices.Sort(sub)
	return sub
}

// connectAddr makes sure we are connected to the node at addr, learning its
// peer ID when we do not know it or the one we knew no longer answers there
// (another node took the address).
func (r *Router) connectAddr(ctx context.Context, addr string, known peer.ID) (peer.ID, error) {
	if known == r.self {
		return known, errSelf
	}
	maddr, err := toMultiaddr(addr)
	if err != nil {
		return "", err
	}
	if known != "" {
		if r.host.Network().Connectedness(known) == network.Connected {
			return known, nil
		}
		if err := r.connect(ctx, known, maddr); err == nil {
			return known, nil
		}
	}
	lctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	id, err := learnPeerID(lctx, r.prober, r.psk, addr)
	cancel()
	if err != nil {
		return "", err
	}
	if id == r.self {
		return id, errSelf
	}
	if err := r.connect(ctx, id, maddr); err != nil {
		return id, err
	}
	return id, nil
}

// connect dials id at addr. The dial skips libp2p's dial backoff: we either
// just saw the node answer a handshake, or it is time for a periodic retry,
// and a node that restarted must not wait out a backoff from its old life.
func (r *Router) connect(ctx context.Context, id peer.ID, addr ma.Multiaddr) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.DialTimeout)
	defer cancel()
	ctx = network.WithForceDirectDial(ctx, "shoal bootstrap")
	return r.host.Connect(ctx, peer.AddrInfo{ID: id, Addrs: []ma.Multiaddr{addr}})
}

// toMultiaddr turns a bootstrap "HOST:PORT" into a TCP multiaddr; a host
// name becomes /dns/NAME, resolved by libp2p when dialing.
func toMultiaddr(addr string) (ma.Multiaddr, error) {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil || port == 0 {
		return nil, fmt.Errorf("bad port in %q", addr)
	}
	if ip := net.ParseIP(h); ip != nil {
		return manet.FromNetAddr(&net.TCPAddr{IP: ip, Port: int(port)})
	}
	return ma.NewMultiaddr("/dns/" + h + "/tcp/" + p)
}
