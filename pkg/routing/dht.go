package routing

import (
	"context"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	protocolPrefix = "/shoal"
	// rtRefreshPeriod is how often the routing table is refreshed and peers
	// not heard from are pinged. A LAN cluster is small and stable, and dead
	// peers are evicted by the liveness watcher (liveness.go) long before a
	// refresh would notice, so this only keeps buckets filled.
	rtRefreshPeriod = time.Minute
	// rtRefreshQueryTimeout bounds one refresh query: on a LAN a peer that
	// has not answered in 2s is not going to.
	rtRefreshQueryTimeout = 2 * time.Second
)

// newDHT starts the Kademlia DHT in server mode on the /shoal protocols.
//
// Provider records: kad-dht v0.42.2 does not accept a custom ProviderStore
// (its dht.ProviderStore option is gone: the DHT always runs its own
// records.ProviderManager), but it takes the manager's datastore and options
// per instance. The datastore is provStore (provstore.go), which keeps each
// record in 8 bytes and expires records by itself, so the manager's own GC,
// a full scan of every record, is off (CleanupInterval 0), and so is its read
// cache (noCache), which provider batches written straight to provStore
// would make stale.
// To observe announcements arriving at this node (which must drop a negative
// cache entry at once) we use OnRequestHook, which sees every inbound DHT
// message, ADD_PROVIDER included, just before the DHT stores it.
//
// This IpfsDHT has no reprovider of its own (the sweeping reprovider lives in
// the separate provider package, which we do not use): records are
// re-announced by advertise.go every ReprovideInterval.
//
// Values (PUT_VALUE / GET_VALUE) are disabled: Shoal stores none, and a
// private DHT need not serve them.
func newDHT(h host.Host, r *Router) (*dht.IpfsDHT, error) {
	ttl := r.cfg.ProviderTTL
	return dht.New(h,
		dht.Mode(dht.ModeServer),
		dht.ProtocolPrefix(protocolPrefix),
		dht.DisableValues(),
		dht.ProviderDatastore(r.provs),
		dht.ProviderManagerOpts(
			records.ProvideValidity(ttl),
			records.ProviderAddrTTL(ttl),
			records.CleanupInterval(0),
			records.Cache(noCache{}),
		),
		dht.RoutingTableRefreshPeriod(rtRefreshPeriod),
		dht.RoutingTableRefreshQueryTimeout(rtRefreshQueryTimeout),
		dht.QueryFilter(func(_ any, ai peer.AddrInfo) bool { return r.maybeAlive(ai.ID) }),
		dht.RoutingTableFilter(func(_ any, p peer.ID) bool { return r.maybeAlive(p) }),
		dht.OnRequestHook(r.onDHTRequest),
	)
}

// onDHTRequest runs synchronously in the DHT's stream handler, so it must be
// quick: it only records that an announcement for the key arrived.
func (r *Router) onDHTRequest(_ context.Context, _ network.Stream, req *pb.Message) {
	if req.GetType() != pb.Message_ADD_PROVIDER {
		return
	}
	r.cache.announced(string(req.GetKey()))
}

// maybeAlive keeps peers we found dead out of queries and the routing table,
// until they connect again.
func (r *Router) maybeAlive(p peer.ID) bool {
	return !r.isDead(p) || r.host.Network().Connectedness(p) == network.Connected
}
