package routing

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	manet "github.com/multiformats/go-multiaddr/net"
	"golang.org/x/sync/singleflight"
)

// mirrorProtocol tells a peer where this node's peer API listens: the
// handler writes MirrorAddr ("HOST:PORT") and closes. 2.0.0: the address is
// the authenticated peer API (MirrorScheme https), no longer the plain mirror
// port, so nodes of different versions skip each other instead of failing.
const mirrorProtocol = protocol.ID("/shoal/mirror/2.0.0")

// maxMirrorAddr bounds what a peer may send; a HOST:PORT is far shorter.
const maxMirrorAddr = 256

func (r *Router) handleMirror(s network.Stream) {
	defer s.Close()
	if r.cfg.MirrorAddr == "" {
		s.Reset()
		return
	}
	s.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(s, r.cfg.MirrorAddr); err != nil {
		r.log.Debug("mirror address request", "peer", s.Conn().RemotePeer(), "err", err)
	}
}

// mirrorCache holds each peer's validated mirror URL. Entries are dropped when
// the peer disconnects: a node that comes back may have new flags.
type mirrorCache struct {
	mu    sync.Mutex
	urls  map[peer.ID]string
	group singleflight.Group
}

func (m *mirrorCache) get(p peer.ID) (string, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	u, ok := m.urls[p]
	return u, ok
}

func (m *mirrorCache) set(p peer.ID, u string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.urls[p] = u
}

func (m *mirrorCache) forget(p peer.ID) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.urls, p)
}

// mirrorURL returns p's mirror URL, asking p once however many look-ups
// want it at the same time.
func (r *Router) mirrorURL(ctx context.Context, p peer.ID) (string, error) {
	if u, ok := r.mirrors.get(p); ok {
		return u, nil
	}
	ch := r.mirrors.group.DoChan(string(p), func() (any, error) {
		// Not the caller's context: others may be waiting on this answer.
		// A dial plus one round trip.
		actx, cancel := context.WithTimeout(r.ctx, 2*r.cfg.DialTimeout)
		defer cancel()
		u, err := r.askMirror(actx, p)
		if err != nil {
			return "", err
		}
		r.mirrors.set(p, u)
		return u, nil
	})
	select {
	case res := <-ch:
		if res.Err != nil {
			return "", res.Err
		}
		return res.Val.(string), nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

func (r *Router) askMirror(ctx context.Context, p peer.ID) (string, error) {
	s, err := r.host.NewStream(ctx, p, mirrorProtocol)
	if err != nil {
		return "", fmt.Errorf("mirror address from %s: %w", p, err)
	}
	defer s.Close()
	if dl, ok := ctx.Deadline(); ok {
		s.SetDeadline(dl)
	}
	b, err := io.ReadAll(io.LimitReader(s, maxMirrorAddr+1))
	if err != nil {
		return "", fmt.Errorf("mirror address from %s: %w", p, err)
	}
	if len(b) > maxMirrorAddr {
		return "", fmt.Errorf("mirror address from %s: too long", p)
	}
	remote, err := manet.ToIP(s.Conn().RemoteMultiaddr())
	if err != nil {
		return "", fmt.Errorf("mirror address from %s: %w", p, err)
	}
	u, err := mirrorURLFor(r.cfg.MirrorScheme, string(b), remote, func(ip net.IP) bool { return r.peerOwnsIP(ctx, p, ip) })
	if err != nil {
		return "", fmt.Errorf("mirror address from %s: %w", p, err)
	}
	return u, nil
}

// mirrorURLFor validates a peer's claimed mirror address and returns the URL
// to fetch from. A peer may only point others at itself: accepting any host
// would let one node aim the whole cluster's traffic at a third party. The
// host must be the IP the peer's connection comes from or, failing that, an
// IP that proven confirms the peer answers at (see peerOwnsIP). An
// unspecified host (":5000", "0.0.0.0:5000") means the connection's IP.
func mirrorURLFor(scheme, claimed string, remote net.IP, proven func(net.IP) bool) (string, error) {
	h, port, err := net.SplitHostPort(strings.TrimSpace(claimed))
	if err != nil {
		return "", fmt.Errorf("mirror address %q: %w", claimed, err)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", fmt.Errorf("mirror address %q: bad port", claimed)
	}
	ip := net.ParseIP(h)
	switch {
	case h == "" || (ip != nil && ip.IsUnspecified()):
		ip = remote
	case ip == nil:
		return "", fmt.Errorf("mirror address %q: host is not an IP", claimed)
	case ip.Equal(remote):
	case proven != nil && proven(ip):
	default:
		return "", fmt.Errorf("%w: claims %s, connects from %s", errForeignMirror, ip, remote)
	}
	return scheme + "://" + net.JoinHostPort(ip.String(), port), nil
}

// peerOwnsIP proves that p answers at ip. The connection a stream runs on is
// not always from the peer's announced address: two nodes dialing each other
// at once collide on the port-reusing dial, and libp2p then dials from an
// unbound socket whose source the kernel picks (127.0.0.1 on loopback, the
// primary address on a multi-homed node). So when the stream's connection
// does not show ip, any other connection to p that does is proof, and
// otherwise a handshake with p at its own announced address on ip is: a
// liar cannot complete a handshake with p's key at an address it does not own.
func (r *Router) peerOwnsIP(ctx context.Context, p peer.ID, ip net.IP) bool {
	for _, c := range r.host.Network().ConnsToPeer(p) {
		if rip, err := manet.ToIP(c.RemoteMultiaddr()); err == nil && rip.Equal(ip) {
			return true
		}
	}
	for _, a := range r.host.Peerstore().Addrs(p) {
		na, err := manet.ToNetAddr(a)
		if err != nil {
			continue
		}
		ta, ok := na.(*net.TCPAddr)
		if !ok || !ta.IP.Equal(ip) {
			continue
		}
		if id, err := learnPeerID(ctx, r.prober, r.psk, ta.String()); err == nil && id == p {
			return true
		}
	}
	return false
}

// errForeignMirror: a peer named a mirror host that is not its own address.
var errForeignMirror = errors.New("mirror address is not the peer's own")
