package routing

import (
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/sec"
	"github.com/libp2p/go-libp2p/p2p/host/autonat"
	basichost "github.com/libp2p/go-libp2p/p2p/host/basic"
	"github.com/libp2p/go-libp2p/p2p/host/eventbus"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/libp2p/go-libp2p/p2p/net/upgrader"
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
//
// The parts are put together by hand, as go-libp2p's config package does for
// libp2p.New, rather than through libp2p.New: that package links every
// transport libp2p has (QUIC, WebTransport, WebRTC, WebSocket: about a
// hundred packages), whose initialisers run at start-up and whose code
// inflates the binary and the pages of it that stay resident, for a node
// that only ever speaks TCP.
func newHost(key crypto.PrivKey, listen ma.Multiaddr, ip net.IP, psk []byte, dialTimeout time.Duration, conns int) (host.Host, error) {
	// Until the basic host owns them (its Close closes the swarm, peerstore,
	// resource manager and connection manager), the parts made so far are
	// closed here on failure, newest first.
	var parts []io.Closer
	fail := func(what string, err error) (host.Host, error) {
		for i := len(parts) - 1; i >= 0; i-- {
			parts[i].Close()
		}
		return nil, fmt.Errorf("routing: %s: %w", what, err)
	}

	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return fail("peer ID", err)
	}
	ps, err := pstoremem.NewPeerstore()
	if err != nil {
		return fail("peerstore", err)
	}
	parts = append(parts, ps)
	// The swarm and the host find the node's own keys in the peerstore.
	if err := ps.AddPrivKey(id, key); err != nil {
		return fail("peerstore", err)
	}
	if err := ps.AddPubKey(id, key.GetPublic()); err != nil {
		return fail("peerstore", err)
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(resourceLimits(conns)))
	if err != nil {
		return fail("resource manager", err)
	}
	parts = append(parts, rm)
	cm, err := connmgr.NewConnManager(conns, conns*5/4, connmgr.WithGracePeriod(time.Minute))
	if err != nil {
		return fail("connection manager", err)
	}
	parts = append(parts, cm)

	// No metrics tracer on the bus: libp2p.New gives it one even with
	// metrics disabled, registered on the global Prometheus registry.
	bus := eventbus.NewBus()
	sw, err := swarm.NewSwarm(id, ps, bus, swarm.WithResourceManager(rm), swarm.WithDialTimeout(dialTimeout))
	if err != nil {
		return fail("swarm", err)
	}
	parts = append(parts, sw)

	mux := *yamux.DefaultTransport
	mux.MaxStreamWindowSize = streamWindow
	muxers := []upgrader.StreamMuxer{{ID: yamux.ID, Muxer: &mux}}
	// Noise is told the muxers so that it can settle the muxer inside its
	// handshake instead of in a round trip after it.
	security, err := noise.New(noise.ID, key, muxers)
	if err != nil {
		return fail("noise", err)
	}
	var protector pnet.PSK // nil: no private network
	if len(psk) > 0 {
		protector = pnet.PSK(psk)
	}
	upg, err := upgrader.New([]sec.SecureTransport{security}, muxers, protector, rm, nil)
	if err != nil {
		return fail("upgrader", err)
	}
	tpt, err := tcp.NewTCPTransport(upg, rm, nil)
	if err != nil {
		return fail("tcp", err)
	}
	if err := sw.AddTransport(tpt); err != nil {
		return fail("tcp", err)
	}

	// A nil ObservedAddrsManager is what DisableIdentifyAddressDiscovery
	// gives: identify still runs, but what peers say they see of us is not
	// turned into addresses to announce. Ping stays on, as libp2p.New has it.
	h, err := basichost.NewHost(sw, &basichost.HostOpts{
		EventBus:     bus,
		ConnManager:  cm,
		AddrsFactory: onlyIP(ip),
		EnablePing:   true,
		UserAgent:    "shoal",
	})
	if err != nil {
		return fail("libp2p host", err)
	}
	// From here the host closes every part.
	if err := sw.Listen(listen); err != nil {
		h.Close()
		return nil, fmt.Errorf("routing: listen on %s: %w", listen, err)
	}
	h.Start()
	// Every node of a cluster can reach every other: say so, as
	// ForceReachabilityPublic does, with a static AutoNAT that never probes.
	an, err := autonat.New(h, autonat.WithReachability(network.ReachabilityPublic))
	if err != nil {
		h.Close()
		return nil, fmt.Errorf("routing: autonat: %w", err)
	}
	h.SetAutoNat(an)
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
