package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/limits"
)

// Header marks a request from another Shoal node: it is answered from the
// node's own store and its transfers in flight only, never from peers or the
// upstream, so requests cannot loop.
const Header = "Shoal-Peer"

// Provider is a peer that has (or is receiving) a key's content.
type Provider struct {
	ID  string
	URL string // the peer's mirror API, e.g. http://10.0.0.5:5000
}

// Finder is what the peer client needs from routing (pkg/routing).
type Finder interface {
	// Find streams the providers of key as they are found; the channel
	// closes when the look-up ends.
	Find(ctx context.Context, key string) <-chan Provider
	// Resolve returns a peer's mirror URL.
	Resolve(ctx context.Context, id string) (Provider, error)
	// Demote keeps a peer out of look-ups for d; with untilBack, only until
	// it connects again, if that is sooner.
	Demote(id string, d time.Duration, untilBack bool)
}

// InflightKey is the routing key under which a node announces that it is
// receiving a blob: peers can read a transfer in flight.
func InflightKey(d digest.Digest) string { return "inflight/" + d.String() }

// Transport carries requests to providers (pkg/peerlink implements it).
type Transport interface {
	// RoundTripper returns the transport for requests to the provider with
	// this peer ID: it must reach that peer and no other, whatever the
	// request's host, and never reuse a connection made for another ID.
	RoundTripper(peerID string) http.RoundTripper
}

// Config configures a Client.
type Config struct {
	Finder Finder
	// Limits: PeerDial, PeerHeaders, HedgeDelay, PeerStall, PeerMinRate,
	// PeerRateWindow and the penalties apply here.
	Limits limits.Limits
	// Transport reaches providers. nil is plain HTTP, which authenticates
	// nobody: for tests only.
	Transport Transport
	// Swarm, when its Planner is set, adds the swarm source to every blob
	// transfer (follow.go).
	Swarm SwarmConfig
	// OnFault observes every demotion (metrics); may be nil.
	OnFault func(Fault)
	Logger  *slog.Logger
}

// Client fetches from other nodes.
type Client struct {
	finder    Finder
	lim       limits.Limits
	transport Transport
	swarm     SwarmConfig
	onFault   func(Fault)
	log       *slog.Logger
}

// followHeaders bounds the wait for headers from a peer that is itself
// waiting for its source to answer (a transfer in flight there).
const followHeaders = 12 * time.Second

// New builds a Client.
func New(cfg Config) *Client {
	lim := cfg.Limits.WithDefaults()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Transport == nil {
		cfg.Transport = plainTransport{&http.Transport{
			Proxy:               nil, // peers are dialled directly, never through a proxy
			DialContext:         (&net.Dialer{Timeout: lim.PeerDial}).DialContext,
			DisableCompression:  true,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
		}}
	}
	return &Client{finder: cfg.Finder, lim: lim, transport: cfg.Transport,
		swarm: cfg.Swarm, onFault: cfg.OnFault, log: cfg.Logger}
}

// plainTransport is one HTTP transport for every provider (tests).
type plainTransport struct{ tr *http.Transport }

func (p plainTransport) RoundTripper(string) http.RoundTripper { return p.tr }

// get sends one marked request to provider p and accepts only wantStatus.
// The response headers must come within headers; the body may take as long
// as its guard allows.
func (c *Client) get(ctx context.Context, headers time.Duration, p Provider, method, url string, hdr http.Header, wantStatus int) (*http.Response, error) {
	ctx, cancel := context.WithCancel(ctx)
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		cancel()
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set(Header, "1")
	client := &http.Client{
		Transport: c.transport.RoundTripper(p.ID),
		// A peer answers or it does not; it never sends us elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	timer := time.AfterFunc(headers, cancel)
	resp, err := client.Do(req)
	if !timer.Stop() {
		if err == nil {
			resp.Body.Close()
		}
		cancel()
		return nil, fmt.Errorf("%w: %w", ErrPeer, &headerTimeout{headers})
	}
	if err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %w", ErrPeer, err)
	}
	if resp.StatusCode != wantStatus {
		resp.Body.Close()
		cancel()
		if resp.StatusCode == http.StatusNotFound {
			return nil, &statusError{resp.Status} // a plain miss (a stale record, a busy relay)
		}
		return nil, fmt.Errorf("%w: %w", ErrPeer, &statusError{resp.Status})
	}
	resp.Body = &cancelOnClose{resp.Body, cancel}
	return resp, nil
}

// headerTimeout: no response headers in time. A net.Error, so that the peer
// counts as unreachable.
type headerTimeout struct{ d time.Duration }

func (e *headerTimeout) Error() string   { return fmt.Sprintf("no response headers within %v", e.d) }
func (e *headerTimeout) Timeout() bool   { return true }
func (e *headerTimeout) Temporary() bool { return true }

// cancelOnClose ends the request's context with its body.
type cancelOnClose struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelOnClose) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

// ErrPeer marks a peer that failed rather than missed: unreachable, no
// answer in time, an error status, an unusable answer.
var ErrPeer = errors.New("peer failed")

// statusError: the peer answered, but not with what was asked for. It is no
// fault of the peer's: a 404 is a plain "not here".
type statusError struct{ status string }

func (e *statusError) Error() string { return "peer answered " + e.status }

func blobURL(base, name string, dgst digest.Digest) string {
	return strings.TrimSuffix(base, "/") + "/v2/" + name + "/blobs/" + dgst.String()
}

// totalSize reads the blob's total size from a 200 or 206 answer, and checks
// that a 206 starts where we asked.
func totalSize(resp *http.Response, off int64) (int64, error) {
	if resp.StatusCode == http.StatusOK {
		return resp.ContentLength, nil
	}
	var start, end, total int64
	if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &start, &end, &total); err != nil || start != off {
		return 0, fmt.Errorf("bad Content-Range %q for offset %d", resp.Header.Get("Content-Range"), off)
	}
	return total, nil
}

// BlobSources are a blob's peer sources for a transfer, in order: the nodes
// that have it or are receiving it, then, with a swarm and an upstream to
// fetch from, the swarm. Without an upstream (a request with no ns) the
// swarm could elect nobody to fetch, and asking would only add a round trip
// to every miss.
func (c *Client) BlobSources(name string, d digest.Digest, upstream bool) []inflight.Source {
	srcs := []inflight.Source{c.Providers(name, d)}
	if c.swarm.Planner != nil && upstream {
		srcs = append(srcs, c.Swarm(name, d))
	}
	return srcs
}
