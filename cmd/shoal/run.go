package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/shoalproject/shoal/pkg/daemon"
	"github.com/shoalproject/shoal/pkg/limits"
	"github.com/shoalproject/shoal/pkg/preflight"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// Default ports. containerd's door is on loopback; every other listener not
// given explicitly binds NODE_IP:port.
const (
	defaultRegistryAddr = "127.0.0.1:5000"
	defaultP2PPort      = 5001
	defaultPeerPort     = 5002
	defaultDebugPort    = 9090
)

func cmdRun(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("shoal run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		nodeIP       = fs.String("node-ip", "", "this node's address (default: first non-loopback IPv4)")
		registryAddr = fs.String("registry-addr", defaultRegistryAddr, "the OCI mirror API the node's containerd talks to; keep it on loopback: it serves anyone who reaches it")
		p2pAddr      = fs.String("p2p-addr", "", "libp2p listener (default NODE_IP:5001)")
		peerAddr     = fs.String("peer-addr", "", "the peer API: blobs and manifests for members only, over mutual TLS with libp2p identities (default NODE_IP:5002)")
		debugAddr    = fs.String("debug-addr", "", "/metrics, /healthz, /readyz, /debug/ listener (default NODE_IP:9090)")
		debugPprof   = fs.Bool("debug-pprof", false, "serve /debug/pprof/ on the debug address")
		socket       = fs.String("containerd-socket", "/run/containerd/containerd.sock", "containerd API socket")
		namespace    = fs.String("containerd-namespace", "k8s.io", "containerd namespace whose images are shared")
		contentDir   = fs.String("containerd-content-dir", "/var/lib/containerd/io.containerd.content.v1.content", "containerd content directory, read directly (falls back to the content API)")
		ctrdConfig   = fs.String("containerd-config", "/etc/containerd/config.toml", "containerd's config file, read at start-up to warn about settings that make containerd bypass Shoal")
		dataDir      = fs.String("data-dir", "/var/lib/shoal", "persisted identity and working files")
		bootDNS      = fs.String("bootstrap-dns", "", "resolve NAME (a headless Service) and bootstrap to every address on the p2p port")
		bootK8s      = fs.Bool("bootstrap-kubernetes", false, "find the other Shoal pods through the Kubernetes API")
		k8sService   = fs.String("kubernetes-service", "shoal", "with --bootstrap-kubernetes: the Service whose EndpointSlices list the Shoal pods (namespace from POD_NAMESPACE)")
		secretFile   = fs.String("p2p-secret-file", "", "file with the cluster's 32-byte pre-shared key (64 hex characters): only nodes that hold it can join the DHT and fetch from peers; required unless --p2p-insecure")
		insecure     = fs.Bool("p2p-insecure", false, "run peers without a cluster key: anyone who reaches the p2p port is a member (development only)")
		strict       = fs.Bool("upstream-strict", false, "refuse every ns that no --upstream lists")
		swarmOn      = fs.Bool("swarm", true, "share blobs with peers while they arrive, so a herd of nodes costs the upstream about one copy; false makes the node act like a version without the swarm")
		resync       = fs.Duration("resync-interval", time.Minute, "how often the advertiser re-walks containerd's images (garbage collection sends no events; containerd 1.6 sends no content events)")
		logLevel     = fs.String("log-level", "info", "debug, info, warn or error (debug logs one line per request)")
		logFormat    = fs.String("log-format", "json", "json or text")
		maxTransfers = fs.Int("max-transfers", 32, "concurrent transfers; past it a new transfer is a fast 404 and containerd pulls directly")
		bootPeers    listFlag
		upstreams    listFlag
		maxSpool     sizeFlag
	)
	fs.Var(&maxSpool, "max-spool", "bytes all transfers in flight may hold in --data-dir together, e.g. 10GiB (default: 10 GiB or 20% of that filesystem's free space, whichever is smaller); past it a new transfer is a fast 404")
	fs.Var(&bootPeers, "bootstrap-peer", "another node's --p2p-addr HOST:PORT (repeatable)")
	fs.Var(&upstreams, "upstream", "NS=URL: requests with ns=NS go to URL; a listed upstream may be private (repeatable)")
	if err := parse(fs, args); err != nil {
		return err
	}
	gcDefaults(os.Getenv)
	log, err := newLogger(stderr, *logLevel, *logFormat)
	if err != nil {
		return err
	}
	ip := *nodeIP
	if ip == "" {
		if ip, err = firstIPv4(); err != nil {
			return err
		}
	} else if net.ParseIP(ip) == nil {
		return fmt.Errorf("--node-ip %q is not an IP address", ip)
	}
	ups := map[string]string{}
	for _, u := range upstreams {
		ns, url, err := upstream.ParseUpstream(u)
		if err != nil {
			return fmt.Errorf("--upstream %q: %w", u, err)
		}
		ups[ns] = url
	}
	// Warn, once containerd answers, about settings that make it bypass Shoal.
	go preflight.Run(ctx, preflight.Config{ConfigFile: *ctrdConfig, Socket: *socket}, log.With("component", "preflight"))
	return daemon.Run(ctx, daemon.Config{
		NodeIP:              ip,
		RegistryAddr:        *registryAddr,
		P2PAddr:             orDefault(*p2pAddr, ip, defaultP2PPort),
		PeerAddr:            orDefault(*peerAddr, ip, defaultPeerPort),
		DebugAddr:           orDefault(*debugAddr, ip, defaultDebugPort),
		DebugPprof:          *debugPprof,
		ContainerdSocket:    *socket,
		ContainerdNamespace: *namespace,
		ContentDir:          *contentDir,
		DataDir:             *dataDir,
		BootstrapPeers:      bootPeers,
		BootstrapDNS:        *bootDNS,
		BootstrapKubernetes: *bootK8s,
		KubernetesService:   *k8sService,
		KubernetesNamespace: podNamespace(),
		P2PSecretFile:       *secretFile,
		P2PInsecure:         *insecure,
		Upstreams:           ups,
		UpstreamStrict:      *strict,
		ResyncInterval:      *resync,
		DisableSwarm:        !*swarmOn,
		Limits:              limits.Limits{MaxTransfers: *maxTransfers, MaxSpool: int64(maxSpool)},
		Logger:              log,
	})
}

func orDefault(addr, ip string, port int) string {
	if addr != "" {
		return addr
	}
	return net.JoinHostPort(ip, strconv.Itoa(port))
}

// firstIPv4 is the first non-loopback IPv4 address of this host.
func firstIPv4() (string, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return "", err
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
			return n.IP.String(), nil
		}
	}
	return "", errors.New("no non-loopback IPv4 address: set --node-ip")
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want json or text", format)
}

// podNamespace is the namespace this pod runs in: POD_NAMESPACE (downward
// API), else the service account's namespace file.
func podNamespace() string {
	if ns := os.Getenv("POD_NAMESPACE"); ns != "" {
		return ns
	}
	if b, err := os.ReadFile("/var/run/secrets/kubernetes.io/serviceaccount/namespace"); err == nil {
		return strings.TrimSpace(string(b))
	}
	return "default"
}

// defaultGOGC is the collector's target when GOGC is not set: the heap may
// grow by half its live size between collections, not double. A DaemonSet
// pays its memory on every node, and an idle node allocates little, so the
// extra collections cost almost nothing. GOMEMLIMIT has no default here: only
// the pod's memory limit tells what it should be, and the chart sets it from
// that.
const defaultGOGC = 50

// gcDefaults applies defaultGOGC unless the environment sets GOGC.
func gcDefaults(getenv func(string) string) {
	if getenv("GOGC") == "" {
		debug.SetGCPercent(defaultGOGC)
	}
}
