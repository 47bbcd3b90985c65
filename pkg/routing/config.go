package routing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/shoalproject/shoal/pkg/limits"
)

// Config configures a Router. Zero durations take the defaults below.
type Config struct {
	// ListenAddr is "HOST:PORT" for the libp2p TCP listener (--p2p-addr). HOST
	// must be an IP; it is also the only address announced to peers.
	ListenAddr string
	// DataDir holds the persisted identity, DataDir/identity.key (Ed25519,
	// created 0600 when missing, reused across restarts).
	DataDir string
	// Secret is an optional 32-byte cluster pre-shared key: the host then runs a
	// libp2p private network and nodes without the key cannot connect. nil
	// means an open DHT (a warning is logged once).
	Secret []byte
	// MirrorAddr is the "HOST:PORT" where this node serves its peers, told to
	// peers that ask over /shoal/mirror/2.0.0.
	MirrorAddr string
	// MirrorScheme is the URL scheme of every node's MirrorAddr; default
	// "http". Shoal's peer API (pkg/peerlink) is "https".
	MirrorScheme string
	// Bootstrap returns other nodes' p2p "HOST:PORT"s. nil is a single node.
	Bootstrap func(ctx context.Context) ([]string, error)
	// BootstrapInterval is how often Bootstrap is polled for new addresses;
	// default 15s. When the routing table empties the router re-bootstraps at
	// once, backing off up to this interval.
	BootstrapInterval time.Duration
	// ProviderTTL is how long a provider record stays valid; default 30m.
	// A record outlives a withdrawn key or a node gone without a word by at
	// most this, and a look-up then finds a peer that answers 404 or not at
	// all, which the peer client handles (pkg/peer).
	ProviderTTL time.Duration
	// ReprovideInterval is how often advertised keys are re-announced; default
	// 10m, and it must be shorter than ProviderTTL. A new key is announced at
	// once, whatever this is.
	ReprovideInterval time.Duration
	// Limits: the provider store's caps and the connection count
	// (ProviderRecords, ProviderRecordsPerPeer, P2PConns); zero fields take
	// limits.Default.
	Limits limits.Limits
	// PositiveCacheTTL caches look-up results; default 2s.
	PositiveCacheTTL time.Duration
	// NegativeCacheTTL caches "no providers"; default 1s. An announcement of the
	// key reaching this node drops the negative entry at once.
	NegativeCacheTTL time.Duration
	// DialTimeout bounds each connect to a peer; default 500ms.
	DialTimeout time.Duration
	// OnLookup observes every Lookup: how long until its channel closed and
	// whether it yielded a provider (shoal_lookup_duration_seconds). May be nil.
	OnLookup func(d time.Duration, found bool)
	// OnPeers observes the connected-peer count when it changes
	// (shoal_connected_peers). May be nil.
	OnPeers func(n int)
	Logger  *slog.Logger
}

const (
	defaultBootstrapInterval = 15 * time.Second
	defaultProviderTTL       = 30 * time.Minute
	defaultReprovide         = 10 * time.Minute
	defaultPositiveTTL       = 2 * time.Second
	defaultNegativeTTL       = time.Second
	defaultDialTimeout       = 500 * time.Millisecond

	// lookupTimeout bounds one network look-up, including resolving the mirror
	// address of what it finds. On a healthy LAN a miss takes milliseconds; the
	// bound only matters when peers are dying, and then the caller is better off
	// going upstream than waiting.
	lookupTimeout = time.Second
	// provideTimeout bounds one announcement of one key.
	provideTimeout = 10 * time.Second
	// newPeerSettle is how long the reprovider waits after a peer connects
	// before giving new peers their records, so a burst of connections (a
	// node joining a cluster) costs one round.
	newPeerSettle = time.Second
	// parallelism bounds concurrent announcements and mirror-address lookups.
	parallelism = 16
)

func (c *Config) setDefaults() error {
	if c.ListenAddr == "" {
		return errors.New("routing: ListenAddr is required")
	}
	if c.DataDir == "" {
		return errors.New("routing: DataDir is required")
	}
	if len(c.Secret) != 0 && len(c.Secret) != 32 {
		return fmt.Errorf("routing: Secret must be 32 bytes, got %d", len(c.Secret))
	}
	if c.MirrorScheme == "" {
		c.MirrorScheme = "http"
	}
	if c.BootstrapInterval <= 0 {
		c.BootstrapInterval = defaultBootstrapInterval
	}
	if c.ProviderTTL <= 0 {
		c.ProviderTTL = defaultProviderTTL
	}
	if c.ReprovideInterval <= 0 {
		c.ReprovideInterval = min(defaultReprovide, c.ProviderTTL/2)
	}
	if c.ReprovideInterval >= c.ProviderTTL {
		return fmt.Errorf("routing: ReprovideInterval %s must be shorter than ProviderTTL %s", c.ReprovideInterval, c.ProviderTTL)
	}
	if c.PositiveCacheTTL <= 0 {
		c.PositiveCacheTTL = defaultPositiveTTL
	}
	if c.NegativeCacheTTL <= 0 {
		c.NegativeCacheTTL = defaultNegativeTTL
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = defaultDialTimeout
	}
	c.Limits = c.Limits.WithDefaults()
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}
