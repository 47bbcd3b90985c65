// Package daemon assembles a Shoal node: the local store, the upstream client,
// the resolution chain, the mirror API and the debug endpoint, and runs them
// until its context ends, then shuts down gracefully.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shoalproject/shoal/pkg/debug"
	"github.com/shoalproject/shoal/pkg/httpserver"
	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/limits"
	"github.com/shoalproject/shoal/pkg/metrics"
	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/peerlink"
	"github.com/shoalproject/shoal/pkg/registry"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/swarm"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// Config is everything `shoal run` takes (see SPEC.md for each flag).
type Config struct {
	NodeIP       string
	RegistryAddr string // containerd's door: loopback, plain HTTP
	P2PAddr      string
	PeerAddr     string // the peer API: members only, mutual TLS (pkg/peerlink)
	DebugAddr    string
	DebugPprof   bool // serve /debug/pprof/ on DebugAddr

	ContainerdSocket    string
	ContainerdNamespace string
	ContentDir          string
	DataDir             string

	BootstrapPeers      []string
	BootstrapDNS        string
	BootstrapKubernetes bool
	KubernetesService   string // the Service whose EndpointSlices list the Shoal pods
	KubernetesNamespace string // the namespace Shoal runs in
	P2PSecretFile       string // cluster pre-shared key: membership of the DHT and of the peer API
	P2PInsecure         bool   // run without P2PSecretFile: anyone reaching the p2p port is a member

	Upstreams      map[string]string
	UpstreamStrict bool
	ResyncInterval time.Duration // advertiser's full re-walk of containerd

	// Limits are the pull path's timeouts and caps (pkg/limits); zero
	// fields take the defaults.
	Limits limits.Limits
	// DisableSwarm makes the node behave as one of a version without the
	// swarm (for mixed-version tests and rollbacks): it neither asks nor
	// answers swarm questions, and is not a member.
	DisableSwarm bool

	// ShutdownTimeout bounds how long in-flight responses may take to finish
	// after SIGTERM. Default 30s.
	ShutdownTimeout time.Duration
	// ServerLimits bounds each HTTP listener (the mirror and the debug
	// endpoint, each on its own): timeouts, header size and a connection
	// cap. Zero fields take httpserver's defaults.
	ServerLimits httpserver.Limits
	Logger       *slog.Logger
}

// Run serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.ShutdownTimeout <= 0 {
		cfg.ShutdownTimeout = 30 * time.Second
	}
	st, err := store.New(store.Config{
		Socket: cfg.ContainerdSocket, Namespace: cfg.ContainerdNamespace,
		ContentDir: cfg.ContentDir, Logger: log.With("component", "store"),
	})
	if err != nil {
		return err
	}
	defer st.Close()
	up, err := upstream.New(upstream.Config{
		Upstreams: cfg.Upstreams, Strict: cfg.UpstreamStrict,
		Logger: log.With("component", "upstream"),
	})
	if err != nil {
		return err
	}
	if cfg.Limits.MaxSpool <= 0 {
		cfg.Limits.MaxSpool = defaultMaxSpool(cfg.DataDir, log)
	}
	lim := cfg.Limits.WithDefaults()
	met := metrics.New()
	transfers, err := inflight.New(inflight.Config{
		Dir: filepath.Join(cfg.DataDir, "spool"), Limits: lim, Logger: log.With("component", "inflight"),
		OnReceive: func(kind string, n int) { met.FetchedBytes.WithLabelValues(kind).Add(float64(n)) },
		OnRefused: func(reason string) { met.Refused.WithLabelValues(reason).Inc() },
	})
	if err != nil {
		return err
	}
	defer transfers.Close()
	met.WatchTransfers(func() (int, int64) { s := transfers.Stats(); return s.Transfers, s.SpoolBytes })

	regLn, err := net.Listen("tcp", cfg.RegistryAddr)
	if err != nil {
		return fmt.Errorf("registry listener: %w", err)
	}
	defer regLn.Close()
	peerLn, err := net.Listen("tcp", cfg.PeerAddr)
	if err != nil {
		return fmt.Errorf("peer listener: %w", err)
	}
	defer peerLn.Close()
	dbgLn, err := net.Listen("tcp", cfg.DebugAddr)
	if err != nil {
		return fmt.Errorf("debug listener: %w", err)
	}
	defer dbgLn.Close()

	// The peer-to-peer side stops after the mirror has drained (defers run
	// in reverse), so in-flight peer fetches can finish.
	p2pCtx, stopP2P := context.WithCancel(context.Background())
	net2, err := startP2P(p2pCtx, cfg, mirrorAddr(peerLn.Addr(), cfg.NodeIP), st, met, log)
	if err != nil {
		stopP2P()
		return err
	}
	defer func() { stopP2P(); net2.router.Close() }()

	sw := swarm.New(swarm.Config{Net: swarmNet{net2.router}, Limits: lim, Logger: log.With("component", "swarm")})
	swarmCfg := peer.SwarmConfig{Planner: sw, Announcer: net2.router,
		Refused: func(err error) bool { return errors.Is(err, upstream.ErrNotFound) }}
	share := sw.Active
	if cfg.DisableSwarm {
		// As a node of a version without the swarm: not a member, no plans.
		swarmCfg, share = peer.SwarmConfig{}, nil
	} else {
		net2.router.ServeSwarm(sw.Handle)
	}
	peers := peer.New(peer.Config{Finder: finder{net2.router}, Transport: net2.client, Limits: lim, Swarm: swarmCfg,
		Logger: log.With("component", "peer")})
	chain := mirror.New(mirror.Config{Local: st, Peers: peers, Upstream: up, Transfers: transfers, Share: share,
		Limits: lim, Metrics: met, Logger: log.With("component", "mirror")})
	history := debug.NewHistory(100)
	reg := registry.New(registry.Config{Mirror: chain, Lists: up, LocalTags: st, Metrics: met, OnRequest: history.Add,
		Logger: log.With("component", "registry")})
	regSrv := newServer(fromContainerd(reg), cfg.ServerLimits, log)
	peerSrv := peerlink.NewServer(peerlink.ServerConfig{
		Identity: net2.identity, Members: net2.router, Handler: fromPeer(reg), Limits: cfg.ServerLimits,
		Logger: log.With("component", "peerlink"),
	})
	dbgSrv := newServer(debug.New(debug.Config{
		Pprof:   cfg.DebugPprof,
		Metrics: met.Handler(),
		Ready: []debug.Check{st.Ready, func(context.Context) error {
			if !net2.router.Ready() {
				return errors.New("p2p host not listening")
			}
			return nil
		}},
		Peers:   net2.debugPeers,
		Images:  net2.images,
		History: history,
		Served: func() map[string]float64 {
			return map[string]float64{"local": counter(met.ServedBytes.WithLabelValues("local")),
				"peer": counter(met.ServedBytes.WithLabelValues("peer")), "upstream": counter(met.ServedBytes.WithLabelValues("upstream"))}
		},
	}), cfg.ServerLimits, log)

	errc := make(chan error, 3)
	go func() { errc <- serve(regSrv, regLn) }()
	go func() { errc <- peerSrv.Serve(peerLn) }()
	go func() { errc <- serve(dbgSrv, dbgLn) }()
	log.Info("shoal serving", "registry", regLn.Addr().String(), "peer_api", peerLn.Addr().String(),
		"debug", dbgLn.Addr().String(), "p2p", cfg.P2PAddr, "peer_id", net2.router.Self().ID,
		"containerd", cfg.ContainerdSocket, "namespace", cfg.ContainerdNamespace)

	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	log.Info("shutting down; letting in-flight responses finish", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// The mirror and the peer API drain together, first, so in-flight pulls
	// (this node's and its peers') finish while health stays visible.
	var wg sync.WaitGroup
	for name, s := range map[string]interface {
		Shutdown(context.Context) error
		Close() error
	}{"registry": regSrv, "peer API": peerSrv} {
		wg.Go(func() {
			if serr := s.Shutdown(sctx); serr != nil {
				// Out of time: cut the stragglers before transfers and the
				// store close under them.
				log.Warn(name+" shutdown", "err", serr)
				s.Close()
			}
		})
	}
	wg.Wait()
	dbgSrv.Shutdown(sctx)
	return err
}

func newServer(h http.Handler, lim httpserver.Limits, log *slog.Logger) *http.Server {
	return httpserver.New(h, lim, slog.NewLogLogger(log.Handler(), slog.LevelDebug))
}

func serve(s *http.Server, ln net.Listener) error {
	if err := s.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// fromContainerd is the handler of containerd's door: a request there is
// never a peer's, whatever its headers say.
func fromContainerd(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Del(peer.Header)
		h.ServeHTTP(w, r)
	})
}

// fromPeer is the handler of the peer API, which only authenticated members
// reach: their requests are answered from this node alone.
func fromPeer(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r.Header.Set(peer.Header, "1")
		h.ServeHTTP(w, r)
	})
}

// mirrorAddr is the peer API address peers are told: the listener's own, or
// the node IP when it listens on every address.
func mirrorAddr(ln net.Addr, nodeIP string) string {
	host, port, _ := net.SplitHostPort(ln.String())
	if ip := net.ParseIP(host); ip == nil || ip.IsUnspecified() {
		host = nodeIP
	}
	return net.JoinHostPort(host, port)
}

// counter reads a counter's current value for the debug page.
func counter(c prometheus.Counter) float64 {
	var m dto.Metric
	if c.Write(&m) != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// defaultMaxSpool is --max-spool's default: 10 GiB, or 20% of the free space
// of the data directory's filesystem, whichever is smaller, so that a node's
// disk never fills with transfers.
func defaultMaxSpool(dir string, log *slog.Logger) int64 {
	const ceiling = 10 << 30
	os.MkdirAll(dir, 0o700)
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		log.Warn("cannot read the data directory's free space; --max-spool defaults to 10 GiB", "dir", dir, "err", err)
		return ceiling
	}
	free := int64(st.Bavail) * int64(st.Bsize)
	n := min(ceiling, free/5)
	if n < 64<<20 {
		log.Warn("the data directory has little free space: transfers that must spool will be refused (containerd then pulls directly)",
			"dir", dir, "free_bytes", free, "max_spool", n)
	}
	return n
}
