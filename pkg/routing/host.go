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

// newHost builds the libp2p host: TCP only (a private network needs it, and a
// LAN needs nothing more), default security and muxer, and none of the
// machinery for the public internet (relays, NAT traversal, hole punching,
// address discovery from what peers observe). Metrics are off because they
// register on the global Prometheus registry; Shoal exports its own.
func newHost(key crypto.PrivKey, listen ma.Multiaddr, ip net.IP, psk []byte, dialTimeout time.Duration) (host.Host, error) {
	opts := []libp2p.Option{
		libp2p.Identity(key),
		libp2p.ListenAddrs(listen),
		libp2p.Transport(tcp.NewTCPTransport),
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
		return nil, fmt.Errorf("routing: libp2p host: %w", err)
	}
	return h, nil
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
