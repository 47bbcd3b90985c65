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
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shoalproject/shoal/pkg/debug"
	"github.com/shoalproject/shoal/pkg/httpserver"
	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/metrics"
	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/registry"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// Config is everything `shoal run` takes (see SPEC.md for each flag).
type Config struct {
	NodeIP       string
	RegistryAddr string
	P2PAddr      string
	DebugAddr    string

	ContainerdSocket    string
	ContainerdNamespace string
	ContentDir          string
	DataDir             string

	BootstrapPeers      []string
	BootstrapDNS        string
	BootstrapKubernetes bool
	KubernetesService   string // the Service whose EndpointSlices list the Shoal pods
	KubernetesNamespace string // the namespace Shoal runs in
	P2PSecretFile       string // cluster pre-shared key for the DHT (optional)

	Upstreams      map[string]string
	UpstreamStrict bool
	ResyncInterval time.Duration // advertiser's full re-walk of containerd

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
	transfers, err := inflight.New(inflight.Config{
		Dir: filepath.Join(cfg.DataDir, "spool"), Logger: log.With("component", "inflight"),
	})
	if err != nil {
		return err
	}
	defer transfers.Close()
	met := metrics.New()

	regLn, err := net.Listen("tcp", cfg.RegistryAddr)
	if err != nil {
		return fmt.Errorf("registry listener: %w", err)
	}
	defer regLn.Close()
	dbgLn, err := net.Listen("tcp", cfg.DebugAddr)
	if err != nil {
		return fmt.Errorf("debug listener: %w", err)
	}
	defer dbgLn.Close()

	// The peer-to-peer side stops after the mirror has drained (defers run
	// in reverse), so in-flight peer fetches can finish.
	p2pCtx, stopP2P := context.WithCancel(context.Background())
	net2, err := startP2P(p2pCtx, cfg, mirrorAddr(regLn.Addr(), cfg.NodeIP), st, met, log)
	if err != nil {
		stopP2P()
		return err
	}
	defer func() { stopP2P(); net2.router.Close() }()

	chain := mirror.New(mirror.Config{Local: st, Peers: peers{net2.router}, Upstream: up, Transfers: transfers,
		Metrics: met, Logger: log.With("component", "mirror")})
	history := debug.NewHistory(100)
	regSrv := newServer(registry.New(registry.Config{Mirror: chain, Lists: up, LocalTags: st, Metrics: met, OnRequest: history.Add,
		Logger: log.With("component", "registry")}), cfg.ServerLimits, log)
	dbgSrv := newServer(debug.New(debug.Config{
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

	errc := make(chan error, 2)
	go func() { errc <- serve(regSrv, regLn) }()
	go func() { errc <- serve(dbgSrv, dbgLn) }()
	log.Info("shoal serving", "registry", regLn.Addr().String(), "debug", dbgLn.Addr().String(),
		"p2p", cfg.P2PAddr, "peer_id", net2.router.Self().ID,
		"containerd", cfg.ContainerdSocket, "namespace", cfg.ContainerdNamespace)

	select {
	case <-ctx.Done():
		err = nil
	case err = <-errc:
	}
	log.Info("shutting down; letting in-flight responses finish", "timeout", cfg.ShutdownTimeout)
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	// The mirror first, so in-flight pulls finish while health stays visible.
	if serr := regSrv.Shutdown(sctx); serr != nil {
		// Out of time: cut the stragglers before transfers and the store
		// close under them.
		log.Warn("registry shutdown", "err", serr)
		regSrv.Close()
	}
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

// mirrorAddr is the mirror address peers are told: the listener's own, or
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
