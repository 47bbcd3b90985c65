package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	manet "github.com/multiformats/go-multiaddr/net"
)

// PeerInfo describes a node for the debug endpoint. For Self, Connected means
// the host is listening.
type PeerInfo struct {
	ID        string   `json:"id"`
	Addrs     []string `json:"addrs"`
	MirrorURL string   `json:"mirror,omitempty"`
	Connected bool     `json:"connected"`
	Swarm     bool     `json:"swarm"`
}

// Router is one node's view of the cluster: its libp2p host and DHT.
type Router struct {
	cfg    Config
	log    *slog.Logger
	host   host.Host
	dht    *dht.IpfsDHT
	self   peer.ID
	psk    pnet.PSK
	prober *noise.SessionTransport // learns peer IDs (learnid.go)

	ctx    context.Context
	cancel context.CancelFunc
	wgMu   sync.Mutex // guards closed against wg.Add racing Close's wg.Wait
	closed bool
	wg     sync.WaitGroup
	once   sync.Once

	cache   *lookupCache
	provs   *provStore // the DHT's provider records (dht.go)
	mirrors mirrorCache
	queries atomic.Int64 // network look-ups started; tests count them
	listed  atomic.Int64 // other nodes bootstrap last listed

	advMu sync.Mutex
	adv   map[[32]byte]struct{} // advertised keys, as keyDigest

	peersMu   sync.Mutex
	demoted   map[peer.ID]demotion
	dead      map[peer.ID]time.Time
	lastPeers int

	bootKick      chan struct{}
	reprovideKick chan struct{}
	newPeerKick   chan struct{} // a DHT peer connected (announceNew)

	annMu sync.Mutex
	told  map[peer.ID]struct{} // peers given their records since the last reprovide
}

// New starts listening, starts the DHT in server mode and bootstraps in the
// background. It returns as soon as the host listens, peers or not. The
// router runs until Close; ctx only carries values.
func New(ctx context.Context, cfg Config) (*Router, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	listen, ip, err := parseListenAddr(cfg.ListenAddr)
	if err != nil {
		return nil, err
	}
	key, created, err := loadIdentity(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	prober, err := newProber(key)
	if err != nil {
		return nil, err
	}
	h, err := newHost(key, listen, ip, cfg.Secret, cfg.DialTimeout, cfg.Limits.P2PConns)
	if err != nil {
		return nil, err
	}
	rctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	r := &Router{
		cfg: cfg, log: log, host: h, self: h.ID(), psk: pnet.PSK(cfg.Secret), prober: prober,
		ctx: rctx, cancel: cancel,
		cache:   newLookupCache(cfg.PositiveCacheTTL, cfg.NegativeCacheTTL),
		provs:   newProvStore(cfg.ProviderTTL, cfg.Limits.ProviderRecords, cfg.Limits.ProviderRecordsPerPeer),
		mirrors: mirrorCache{urls: map[peer.ID]string{}},
		adv:     map[[32]byte]struct{}{},
		demoted: map[peer.ID]demotion{}, dead: map[peer.ID]time.Time{},
		bootKick: make(chan struct{}, 1), reprovideKick: make(chan struct{}, 1), newPeerKick: make(chan struct{}, 1),
		told: map[peer.ID]struct{}{},
	}
	// Subscribe before the DHT starts so that no connection is missed.
	sub, err := h.EventBus().Subscribe([]any{
		new(event.EvtPeerConnectednessChanged), new(event.EvtPeerIdentificationCompleted),
	})
	if err != nil {
		cancel()
		h.Close()
		return nil, fmt.Errorf("routing: %w", err)
	}
	h.SetStreamHandler(mirrorProtocol, r.handleMirror)
	h.SetStreamHandler(batchProtocol, r.handleBatch)
	if r.dht, err = newDHT(h, r); err != nil {
		cancel()
		sub.Close()
		h.Close()
		return nil, fmt.Errorf("routing: dht: %w", err)
	}
	r.spawn(func() { r.watchPeers(sub) })
	r.spawn(r.bootstrapLoop)
	r.spawn(r.reprovideLoop)

	log.Info("p2p listening", "peer", r.self, "addrs", h.Addrs(), "identity_created", created, "private_network", len(cfg.Secret) > 0)
	return r, nil
}

func newProber(key crypto.PrivKey) (*noise.SessionTransport, error) {
	t, err := noise.New(noise.ID, key, nil)
	if err != nil {
		return nil, fmt.Errorf("routing: %w", err)
	}
	return t.WithSessionOptions(noise.DisablePeerIDCheck())
}

// spawn runs fn in a goroutine that Close waits for; it does nothing and
// returns false once the router is closing.
func (r *Router) spawn(fn func()) bool {
	r.wgMu.Lock()
	defer r.wgMu.Unlock()
	if r.closed {
		return false
	}
	r.wg.Go(fn)
	return true
}

// kick wakes a loop without blocking; a pending wake-up absorbs later ones.
func (r *Router) kick(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Close stops the DHT and the host. Records elsewhere expire by ProviderTTL.
func (r *Router) Close() error {
	var err error
	r.once.Do(func() {
		r.wgMu.Lock()
		r.closed = true
		r.wgMu.Unlock()
		r.cancel()
		r.wg.Wait()
		err = errors.Join(r.dht.Close(), r.host.Close())
	})
	return err
}

// Ready reports whether the host listens. A node without peers is ready.
func (r *Router) Ready() bool {
	select {
	case <-r.ctx.Done():
		return false
	default:
	}
	return len(r.host.Network().ListenAddresses()) > 0
}

// Self describes this node.
func (r *Router) Self() PeerInfo {
	return PeerInfo{
		ID:        r.self.String(),
		Addrs:     addrStrings(r.host.Addrs()),
		MirrorURL: r.selfMirrorURL(),
		Connected: r.Ready(),
	}
}

func (r *Router) selfMirrorURL() string {
	if r.cfg.MirrorAddr == "" {
		return ""
	}
	return r.cfg.MirrorScheme + "://" + r.cfg.MirrorAddr
}

// Peers lists the routing table and the connected peers, sorted by ID.
func (r *Router) Peers() []PeerInfo {
	ids := r.dht.RoutingTable().ListPeers()
	ids = append(ids, r.host.Network().Peers()...)
	slices.Sort(ids)
	ids = slices.Compact(ids)
	out := make([]PeerInfo, 0, len(ids))
	for _, id := range ids {
		if id == r.self {
			continue
		}
		u, _ := r.mirrors.get(id)
		out = append(out, PeerInfo{
			ID:        id.String(),
			Addrs:     addrStrings(r.host.Peerstore().Addrs(id)),
			MirrorURL: u,
			Connected: r.host.Network().Connectedness(id) == network.Connected,
			Swarm:     r.speaksSwarm(id),
		})
	}
	return out
}

// listenAddr is the "HOST:PORT" the host actually listens on (the port is
// only known after listening when ListenAddr asked for port 0).
func (r *Router) listenAddr() string {
	for _, a := range r.host.Network().ListenAddresses() {
		if na, err := manet.ToNetAddr(a); err == nil {
			if ta, ok := na.(*net.TCPAddr); ok {
				return ta.String()
			}
		}
	}
	return ""
}
