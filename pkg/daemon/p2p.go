package daemon

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	libp2ppeer "github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalproject/shoal/pkg/advertiser"
	"github.com/shoalproject/shoal/pkg/debug"
	"github.com/shoalproject/shoal/pkg/metrics"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/peerlink"
	"github.com/shoalproject/shoal/pkg/routing"
	"github.com/shoalproject/shoal/pkg/routing/bootstrap"
	"github.com/shoalproject/shoal/pkg/store"
)

// p2p is the node's peer-to-peer side: the DHT router, the advertiser that
// feeds it from containerd, and where the bootstrap addresses come from.
type p2p struct {
	router   *routing.Router
	adv      *advertiser.Advertiser
	identity *peerlink.Identity // the router's identity, as a TLS certificate
	client   *peerlink.Client   // reaches providers over the peer API
}

// startP2P joins the DHT and starts advertising; both run until ctx ends.
func startP2P(ctx context.Context, cfg Config, mirrorAddr string, st *store.Store, met *metrics.Metrics, log *slog.Logger) (*p2p, error) {
	secret, err := readSecret(cfg.P2PSecretFile)
	if err != nil {
		return nil, err
	}
	switch {
	case secret == nil && !cfg.P2PInsecure:
		return nil, errors.New("refusing to run peers without the cluster's key: give --p2p-secret-file " +
			"(the chart always does), or --p2p-insecure to let anyone who reaches the p2p port be a member")
	case secret != nil && cfg.P2PInsecure:
		return nil, errors.New("--p2p-insecure and --p2p-secret-file contradict each other: give one")
	case cfg.P2PInsecure:
		log.Warn("--p2p-insecure: no cluster key; any host that reaches the p2p port joins the DHT, " +
			"learns what this cluster holds and may fetch it from the peer API. Development only")
	}
	boot, err := bootstrapFunc(ctx, cfg, log)
	if err != nil {
		return nil, err
	}
	router, err := routing.New(ctx, routing.Config{
		ListenAddr:   cfg.P2PAddr,
		DataDir:      cfg.DataDir,
		Secret:       secret,
		MirrorAddr:   mirrorAddr,
		MirrorScheme: "https",
		Bootstrap:    boot,
		OnLookup:     func(d time.Duration, _ bool) { met.LookupDuration.Observe(d.Seconds()) },
		OnPeers:      func(n int) { met.ConnectedPeers.Set(float64(n)) },
		Logger:       log.With("component", "routing"),
	})
	if err != nil {
		return nil, err
	}
	id, err := peerlink.NewIdentity(router.PrivateKey())
	if err != nil {
		router.Close()
		return nil, err
	}
	adv := advertiser.New(advertiser.Config{
		Client:         st.Client(),
		Namespace:      cfg.ContainerdNamespace,
		Router:         router,
		ResyncInterval: cfg.ResyncInterval,
		OnChange:       func(n int) { met.AdvertisedKeys.Set(float64(n)) },
		Logger:         log.With("component", "advertiser"),
	})
	go func() {
		if err := adv.Run(ctx); err != nil && ctx.Err() == nil {
			log.Error("advertiser stopped", "err", err)
		}
	}()
	go sampleRecords(ctx, router, met)
	return &p2p{router: router, adv: adv, identity: id,
		// The peer client enforces its own header waits (pkg/peer): the
		// transport's is only an outer bound.
		client: peerlink.NewClient(peerlink.ClientConfig{Identity: id, Members: router, HeaderWait: time.Minute})}, nil
}

// readSecret reads the cluster's pre-shared key: 64 hex characters.
func readSecret(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--p2p-secret-file: %w", err)
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) != 32 {
		return nil, fmt.Errorf("--p2p-secret-file %s: want 64 hex characters (a 32-byte key)", path)
	}
	return key, nil
}

// bootstrapFunc combines every configured way of finding other nodes.
func bootstrapFunc(ctx context.Context, cfg Config, log *slog.Logger) (bootstrap.Func, error) {
	_, p2pPort, err := net.SplitHostPort(cfg.P2PAddr)
	if err != nil {
		return nil, fmt.Errorf("--p2p-addr: %w", err)
	}
	var fns []bootstrap.Func
	if len(cfg.BootstrapPeers) > 0 {
		fns = append(fns, bootstrap.Static(cfg.BootstrapPeers))
	}
	if cfg.BootstrapDNS != "" {
		fns = append(fns, bootstrap.DNS(cfg.BootstrapDNS, p2pPort, nil))
	}
	if cfg.BootstrapKubernetes {
		slices, err := bootstrap.InClusterClient(cfg.KubernetesNamespace)
		if err != nil {
			return nil, fmt.Errorf("--bootstrap-kubernetes: %w", err)
		}
		k := bootstrap.NewKubernetes(slices, cfg.KubernetesNamespace, cfg.KubernetesService, p2pPort, log.With("component", "bootstrap"))
		go func() {
			if err := k.Run(ctx); err != nil && ctx.Err() == nil {
				log.Error("kubernetes bootstrap stopped", "err", err)
			}
		}()
		fns = append(fns, k.Func())
	}
	if len(fns) == 0 {
		return nil, nil
	}
	return bootstrap.Combine(cfg.Limits.WithDefaults().BootstrapSource, fns...), nil
}

// finder adapts the router to the peer client's Finder.
type finder struct{ r *routing.Router }

func (f finder) Find(ctx context.Context, key string) <-chan peer.Provider {
	in := f.r.Lookup(ctx, key)
	out := make(chan peer.Provider)
	go func() {
		defer close(out)
		for prov := range in {
			select {
			case out <- peer.Provider{ID: prov.ID.String(), URL: prov.MirrorURL}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return out
}

func (f finder) Resolve(ctx context.Context, id string) (peer.Provider, error) {
	p, err := f.r.Resolve(ctx, id)
	if err != nil {
		return peer.Provider{}, err
	}
	return peer.Provider{ID: p.ID.String(), URL: p.MirrorURL}, nil
}

func (f finder) Demote(id string, d time.Duration, untilBack bool) {
	if pid, err := libp2ppeer.Decode(id); err == nil {
		f.r.Demote(pid, d, untilBack)
	}
}

// swarmNet adapts the router to the swarm's Net.
type swarmNet struct{ r *routing.Router }

func (n swarmNet) Self() string      { return n.r.SelfID() }
func (n swarmNet) Members() []string { return n.r.SwarmMembers() }
func (n swarmNet) Ask(ctx context.Context, to string, req []byte) ([]byte, error) {
	return n.r.AskSwarm(ctx, to, req)
}

// debugPeers is the /debug/peers document.
func (p *p2p) debugPeers() debug.Peers {
	conv := func(i routing.PeerInfo) debug.Peer {
		return debug.Peer{ID: i.ID, Addrs: i.Addrs, Mirror: i.MirrorURL, Connected: i.Connected, Swarm: i.Swarm}
	}
	out := debug.Peers{Self: conv(p.router.Self())}
	for _, i := range p.router.Peers() {
		out.Peers = append(out.Peers, conv(i))
	}
	return out
}

func (p *p2p) images() []debug.Image {
	var out []debug.Image
	for _, i := range p.adv.Images() {
		out = append(out, debug.Image{Name: i.Name, Digest: i.Digest, Size: i.Size, Keys: i.Keys})
	}
	return out
}

// recordsSample is how often shoal_provider_records is sampled: the store
// changes with every announcement that arrives, far too often for a gauge
// set on each.
const recordsSample = 15 * time.Second

func sampleRecords(ctx context.Context, r *routing.Router, met *metrics.Metrics) {
	t := time.NewTicker(recordsSample)
	defer t.Stop()
	for {
		met.ProviderRecords.Set(float64(r.StoredRecords()))
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
