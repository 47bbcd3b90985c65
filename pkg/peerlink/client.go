package peerlink

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ClientConfig configures a Client; zero values take the defaults.
type ClientConfig struct {
	Identity *Identity
	// Members, when set, is asked before each dial: a provider must be a
	// member (and, being connected, is then known as one on its side too).
	Members     Members
	DialTimeout time.Duration // TCP connect plus TLS handshake; default 1s
	HeaderWait  time.Duration // response headers; default 2s
	// MaxPeers bounds the per-peer connection pools kept; the least recently
	// used is dropped beyond it. Default 128.
	MaxPeers int
}

// Client reaches providers over the peer channel. Each expected peer ID has
// its own pool: a connection verified as one peer is never reused for a
// request meant for another, even at the same address (a node restarted with
// a new identity, or an address taken over).
type Client struct {
	cfg   ClientConfig
	mu    sync.Mutex
	pools map[peer.ID]*list.Element // of *pool
	lru   *list.List
}

type pool struct {
	id peer.ID
	tr *http.Transport
	rt http.RoundTripper
}

// NewClient returns a client.
func NewClient(cfg ClientConfig) *Client {
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = time.Second
	}
	if cfg.HeaderWait <= 0 {
		cfg.HeaderWait = 2 * time.Second
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = 128
	}
	return &Client{cfg: cfg, pools: map[peer.ID]*list.Element{}, lru: list.New()}
}

// RoundTripper returns the transport for requests to peerID: it dials the
// request's host and completes the request only if the TLS handshake there
// proves peerID (and, with Members, peerID is a member). Requests must use
// the https scheme.
func (c *Client) RoundTripper(peerID string) http.RoundTripper {
	id, err := peer.Decode(peerID)
	if err != nil {
		return failing{fmt.Errorf("peerlink: provider ID %q: %w", peerID, err)}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.pools[id]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*pool).rt
	}
	tr := c.transport(id)
	p := &pool{id: id, tr: tr, rt: coalescing{tr}}
	c.pools[id] = c.lru.PushFront(p)
	for c.lru.Len() > c.cfg.MaxPeers {
		old := c.lru.Remove(c.lru.Back()).(*pool)
		delete(c.pools, old.id)
		old.tr.CloseIdleConnections()
	}
	return p.rt
}

// CloseIdleConnections closes every pooled connection that is idle.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.lru.Front(); e != nil; e = e.Next() {
		e.Value.(*pool).tr.CloseIdleConnections()
	}
}

func (c *Client) transport(id peer.ID) *http.Transport {
	return &http.Transport{
		Proxy: nil, // peers are dialled directly, never through a proxy
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return c.dial(ctx, id, network, addr)
		},
		TLSNextProto:          map[string]func(string, *tls.Conn) http.RoundTripper{}, // HTTP/1.1 only
		ResponseHeaderTimeout: c.cfg.HeaderWait,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
	}
}

// dial connects to addr and proves that id answers there.
func (c *Client) dial(ctx context.Context, id peer.ID, network, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.DialTimeout)
	defer cancel()
	if c.cfg.Members != nil && !c.cfg.Members.Member(ctx, id) {
		return nil, &net.OpError{Op: "dial", Net: network, Err: fmt.Errorf("%w: %s", ErrNotMember, id)}
	}
	raw, err := (&net.Dialer{}).DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	conf := c.cfg.Identity.config(func(got peer.ID) error {
		if got != id {
			return fmt.Errorf("%w: want %s, got %s at %s", ErrWrongPeer, id, got, addr)
		}
		return nil
	})
	tc := tls.Client(raw, conf)
	if err := tc.HandshakeContext(ctx); err != nil {
		raw.Close()
		// A net.Error, so that the caller treats the provider as unreachable.
		return nil, &net.OpError{Op: "handshake", Net: network, Addr: raw.RemoteAddr(), Err: err}
	}
	return tc, nil
}

// coalesceMin is how much a body read gathers before it returns. TLS hands
// over one record (at most 16 KiB) per Read where TCP hands over what the
// socket holds; a consumer that writes, hashes and wakes its readers once per
// Read (pkg/inflight) would do so 8 to 16 times as often (measured: 8x fewer
// reads, about 5% less CPU for the copy). A stall watchdog above sees
// progress once per 128 KiB, so a peer slower than that per stall timeout
// (26 KB/s at 5 s) counts as stalled, which on a LAN it is.
const coalesceMin = 128 << 10

// coalescing gives response bodies large reads.
type coalescing struct{ rt http.RoundTripper }

func (c coalescing) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.rt.RoundTrip(r)
	if err == nil {
		resp.Body = &gather{resp.Body}
	}
	return resp, err
}

type gather struct{ io.ReadCloser }

// Read fills p up to coalesceMin, returning early only on an error or EOF.
func (g *gather) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) && n < coalesceMin {
		m, err := g.ReadCloser.Read(p[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// failing is the transport for a provider ID that does not parse.
type failing struct{ err error }

func (f failing) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return nil, f.err
}

// IsRefusal reports whether err says a peer failed to prove who it is or was
// not a member, as opposed to being down.
func IsRefusal(err error) bool {
	return errors.Is(err, ErrWrongPeer) || errors.Is(err, ErrNotMember)
}
