package routing

import (
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/pnet"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// parseListenAddr turns "IP:PORT" into the TCP multiaddr to listen on. HOST
// must be an IP literal: it is what peers are told to dial, and a name could
// resolve differently on every node.
func parseListenAddr(s string) (ma.Multiaddr, net.IP, error) {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return nil, nil, fmt.Errorf("routing: ListenAddr %q: %w", s, err)
	}
	ip := net.ParseIP(h)
	if ip == nil {
		return nil, nil, fmt.Errorf("routing: ListenAddr %q: host must be an IP address", s)
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return nil, nil, fmt.Errorf("routing: ListenAddr %q: bad port", s)
	}
	addr, err := manet.FromNetAddr(&net.TCPAddr{IP: ip, Port: int(port)})
	if err != nil {
		return nil, nil, fmt.Errorf("routing: ListenAddr %q: %w", s, err)
	}
	return addr, ip, nil
}

// streamWindow is the most a yamux stream may have in flight. libp2p's
// default lets a stream grow to 16 MiB, for bulk transfers across continents;
// Shoal's libp2p streams carry only DHT messages and small control messages
// (blobs go over the peer API), and on a LAN 256 KiB a stream is more than
// the link can fill in a round trip.
const streamWindow = 256 << 10

// newHost builds the libp2p host: TCP only (a private network needs it, and a
// LAN needs nothing more), Noise only (the one security protocol the peer-ID
// prober speaks, learnid.go), yamux with a small stream window, explicit
// resource-manager limits and connection-manager water marks sized from
// conns (Limits.P2PConns), and none of the machinery for the public internet
// (relays, NAT traversal, hole punching, address discovery from what peers
// observe). Metrics are off because they register on the global Prometheus
// registry; Shoal exports its own.
func newHost(key crypto.PrivKey, listen ma.Multiaddr, ip net.IP, psk []byte, dialTimeout time.Duration, conns int) (host.Host, error) {
	mux := *yamux.DefaultTransport
	mux.MaxStreamWindowSize = streamWindow
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(resourceLimits(conns)))
	if err != nil {
		return nil, fmt.Errorf("routing: resource manager: %w", err)
	}
	cm, err := connmgr.NewConnManager(conns, conns*5/4, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return nil, fmt.Errorf("routing: connection manager: %w", err)
	}
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrs(listen),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, &mux),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.AddrsFactory(onlyIP(ip)),
		libp2p.DisableRelay(),
		libp2p.DisableMetrics(),
		libp2p.DisableIdentifyAddressDiscovery(),
		// Every node of a cluster can reach every other: say so, so that the
		// AutoNAT client never probes.
		libp2p.ForceReachabilityPublic(),
		libp2p.WithDialTimeout(dialTimeout),
		libp2p.UserAgent("shoal"),
	}
	if len(psk) > 0 {
		opts = append(opts, libp2p.PrivateNetwork(pnet.PSK(psk)))
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		rm.Close()
		cm.Close()
		return nil, fmt.Errorf("routing: libp2p host: %w", err)
	}
	return h, nil
}

// resourceLimits are fixed, not scaled from the machine's memory as libp2p's
// defaults are (a DaemonSet pod sees the node's memory, not its own limit):
// enough connections for conns peers with room for churn, and streams to
// match. Memory is what yamux reserves: a stream's full receive window
// (streamWindow) from the moment it opens, although it holds only what is in
// flight, so the limits allow the streams' windows (64 a peer, 8*conns in
// all) rather than bind before the stream counts do. Nodes hold about two
// DHT streams per peer (kad-dht keeps one open to each peer it talks to).
func resourceLimits(conns int) rcmgr.ConcreteLimitConfig {
	lv := func(n int) rcmgr.LimitVal { return rcmgr.LimitVal(n) }
	peerConns := 4 // a node's connection, one redialled while the old one closes, a prober's
	streams := 8 * conns
	system := rcmgr.ResourceLimits{
		Conns: lv(2 * conns), ConnsInbound: lv(2 * conns), ConnsOutbound: lv(2 * conns),
		Streams: lv(streams), StreamsInbound: lv(streams / 2), StreamsOutbound: lv(streams / 2),
		FD:     lv(2 * conns),
		Memory: rcmgr.LimitVal64(int64(streams) * streamWindow),
	}
	const peerStreams = 64
	perPeer := rcmgr.ResourceLimits{
		Conns: lv(peerConns), ConnsInbound: lv(peerConns), ConnsOutbound: lv(peerConns),
		Streams: lv(peerStreams), StreamsInbound: lv(peerStreams / 2), StreamsOutbound: lv(peerStreams / 2),
		FD:     lv(peerConns),
		Memory: rcmgr.LimitVal64(peerStreams * streamWindow),
	}
	return rcmgr.PartialLimitConfig{
		System:      system,
		Transient:   system,
		PeerDefault: perPeer,
	}.Build(rcmgr.DefaultLimits.Scale(int64(streams)*streamWindow, 2*conns))
}

// onlyIP announces only addresses on the configured IP, so a node on
// 127.0.0.3 advertises 127.0.0.3 and a node never advertises an interface
// peers cannot reach. With an unspecified IP (0.0.0.0, ::) every interface
// address is announced, as libp2p would.
func onlyIP(ip net.IP) func([]ma.Multiaddr) []ma.Multiaddr {
	return func(addrs []ma.Multiaddr) []ma.Multiaddr {
		if ip.IsUnspecified() {
			return addrs
		}
		out := make([]ma.Multiaddr, 0, 1)
		for _, a := range addrs {
			if aip, err := manet.ToIP(a); err == nil && aip.Equal(ip) {
				out = append(out, a)
			}
		}
		return out
	}
}
