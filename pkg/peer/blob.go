package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// Providers is an inflight.Source over the peers that have a blob: the
// providers of its digest. Each Open (a first fetch, or a resume after a
// failure) races the providers not tried yet. Nodes still receiving the blob
// are reached through the swarm (follow.go), which keeps their fan-out
// bounded.
//
// The look-up outlives the attempt that started it, so that a resume sees
// providers that arrived after the first attempt failed; it ends with the
// transfer (Finished).
func (c *Client) Providers(name string, d digest.Digest) *ProviderSource {
	return &ProviderSource{c: c, name: name, d: d}
}

// ProviderSource: see Providers.
type ProviderSource struct {
	c    *Client
	name string
	d    digest.Digest

	mu     sync.Mutex
	provs  *providerList
	stop   context.CancelFunc
	used   []Provider   // providers whose bytes are in the transfer
	last   *guardedBody // the body of the latest attempt
	lastBy Provider
}

func (s *ProviderSource) Kind() string  { return "peer" }
func (s *ProviderSource) Trusted() bool { return false }

func (s *ProviderSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	s.judgeLast()
	if s.provs == nil {
		lctx, stop := context.WithCancel(context.WithoutCancel(ctx))
		s.stop = stop
		s.provs = collect(lctx, s.c.finder.Find(lctx, s.d.String()))
	}
	provs := s.provs
	s.mu.Unlock()
	resp, p, cancel, err := s.c.race(ctx, provs, func(ctx context.Context, p Provider) (*http.Response, error) {
		return s.c.openBlob(ctx, s.c.lim.PeerHeaders, p, s.name, s.d, off)
	})
	if err != nil {
		return nil, 0, err
	}
	size, _ := totalSize(resp, off)
	body := s.c.guard(resp.Body, cancel)
	s.mu.Lock()
	s.used = append(s.used, p)
	s.last, s.lastBy = body, p
	s.mu.Unlock()
	s.c.log.Debug("fetching from peer", "digest", s.d, "peer", p.ID, "offset", off)
	return body, size, nil
}

// openBlob asks one peer for a blob from off on.
func (c *Client) openBlob(ctx context.Context, headers time.Duration, p Provider, name string, d digest.Digest, off int64) (*http.Response, error) {
	hdr := http.Header{}
	want := http.StatusOK
	if off > 0 {
		hdr.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
		want = http.StatusPartialContent
	}
	resp, err := c.get(ctx, headers, p, http.MethodGet, blobURL(p.URL, name, d), hdr, want)
	if err != nil {
		return nil, err
	}
	// A size is required: unverified peer bytes go to disk, and a stream of
	// unknown length could fill it before the digest fails.
	if n, err := totalSize(resp, off); err != nil || n < 0 {
		resp.Body.Close()
		return nil, fmt.Errorf("%w: no usable size: %v", ErrPeer, err)
	}
	return resp, nil
}

// judgeLast blames the provider of the previous attempt for how its body
// ended, before moving on: a stall, a trickle or a short body is a fault,
// the same as not answering. s.mu is held.
func (s *ProviderSource) judgeLast() {
	if s.last == nil {
		return
	}
	g, p := s.last, s.lastBy
	s.last = nil
	if f := g.Fault(); f != nil {
		s.c.blame(p, Slow, f)
	} else if err := g.Err(); err != nil && !errors.Is(err, context.Canceled) {
		s.c.blame(p, Slow, fmt.Errorf("body ended early: %w", err))
	}
}

// Demote shuns every peer whose bytes went into a transfer that failed to
// verify (or whose size a trusted source contradicted): one of them lied, and
// we cannot tell which.
func (s *ProviderSource) Demote(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.used {
		s.c.blame(p, Liar, err)
	}
	s.used = nil
	s.last = nil
}

// Finished ends the look-up.
func (s *ProviderSource) Finished(error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stop != nil {
		s.stop()
	}
}
