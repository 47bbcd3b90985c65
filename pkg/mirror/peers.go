package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/oci"
)

// PeerHeader marks a request from another Shoal node: it is answered from the
// node's own store (and transfers in flight) only, never from peers or the
// upstream, so requests cannot loop.
const PeerHeader = "Shoal-Peer"

// Provider is a peer that advertised a key.
type Provider struct {
	ID  string
	URL string // the peer's mirror API, e.g. http://10.0.0.5:5000
}

// Peers finds the providers of a key (pkg/routing implements it).
type Peers interface {
	// Find streams providers as they are found; the channel closes when the
	// look-up ends.
	Find(ctx context.Context, key string) <-chan Provider
	// Demote keeps a peer out of look-ups for a while: it lied or was dead.
	Demote(id string, d time.Duration)
}

// PeerOptions tunes peer fetches; zero values take the defaults.
type PeerOptions struct {
	DialTimeout  time.Duration // per-peer TCP connect; default 300ms
	HeaderWait   time.Duration // per-peer wait for response headers; default 2s
	HedgeDelay   time.Duration // ask a second provider when the first is this slow; default 100ms
	StallTimeout time.Duration // a body that sends nothing this long is abandoned; default 5s
	LiarPenalty  time.Duration // how long a peer that sent bad bytes is shunned; default 10m
	DeadPenalty  time.Duration // how long an unreachable peer is shunned; default 30s
}

func (o PeerOptions) withDefaults() PeerOptions {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&o.DialTimeout, 300*time.Millisecond)
	def(&o.HeaderWait, 2*time.Second)
	def(&o.HedgeDelay, 100*time.Millisecond)
	def(&o.StallTimeout, 5*time.Second)
	def(&o.LiarPenalty, 10*time.Minute)
	def(&o.DeadPenalty, 30*time.Second)
	return o
}

// peerClient fetches from other nodes with fast failure and hedging.
type peerClient struct {
	peers Peers
	opts  PeerOptions
	http  *http.Client
	log   *slog.Logger
}

func newPeerClient(p Peers, opts PeerOptions, log *slog.Logger) *peerClient {
	opts = opts.withDefaults()
	tr := &http.Transport{
		Proxy:                 nil, // peers are dialled directly, never through a proxy
		DialContext:           (&net.Dialer{Timeout: opts.DialTimeout}).DialContext,
		ResponseHeaderTimeout: opts.HeaderWait,
		DisableCompression:    true,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
	}
	return &peerClient{peers: p, opts: opts, log: log, http: &http.Client{
		Transport: tr,
		// A peer answers or it does not; it never sends us elsewhere.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// get sends one marked request to a peer and accepts only wantStatus.
func (c *peerClient) get(ctx context.Context, method, url string, hdr http.Header, wantStatus int) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, url, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set(PeerHeader, "1")
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrPeer, err)
	}
	if resp.StatusCode != wantStatus {
		resp.Body.Close()
		if resp.StatusCode == http.StatusNotFound {
			return nil, fmt.Errorf("peer answered %s", resp.Status) // a plain miss: a stale record
		}
		return nil, fmt.Errorf("%w: answered %s", ErrPeer, resp.Status)
	}
	return resp, nil
}

// errNoPeer means no provider could answer.
var errNoPeer = errors.New("no peer could serve it")

// ErrPeer marks a peer that failed rather than missed: unreachable, an error
// status, an unusable answer.
var ErrPeer = errors.New("peer failed")

// attempt is one request to one provider.
type attempt func(ctx context.Context, p Provider) (*http.Response, error)

// race asks providers one at a time, starting the next when the current one
// fails or has not answered within HedgeDelay; the first success wins and
// every other attempt is cancelled. The winner's cancel func must be called
// when its body is done with.
func (c *peerClient) race(ctx context.Context, provs *providerList, try attempt) (*http.Response, Provider, context.CancelFunc, error) {
	type result struct {
		resp *http.Response
		prov Provider
		err  error
	}
	results := make(chan result)
	cancels := map[string]context.CancelFunc{}
	running, want := 0, true
	var hedge <-chan time.Time
	var errs []error
	finish := func() {
		for _, cancel := range cancels {
			cancel()
		}
		go func(n int) { // late winners still hold bodies
			for range n {
				if r := <-results; r.err == nil {
					r.resp.Body.Close()
				}
			}
		}(running)
	}
	for {
		var more <-chan struct{}
		if want {
			// Take the change channel before looking, so that a provider
			// arriving in between still wakes us.
			changed := provs.changed()
			if p, ok := provs.pop(); ok {
				actx, cancel := context.WithCancel(ctx)
				cancels[p.ID] = cancel
				running++
				want = false
				hedge = time.After(c.opts.HedgeDelay)
				go func() {
					resp, err := try(actx, p)
					results <- result{resp, p, err}
				}()
				continue
			}
			if provs.exhausted() {
				if running == 0 {
					finish()
					return nil, Provider{}, nil, errors.Join(append([]error{errNoPeer}, errs...)...)
				}
			} else {
				more = changed
			}
		}
		select {
		case <-more:
		case <-hedge:
			want, hedge = true, nil
		case r := <-results:
			running--
			if r.err == nil {
				win := cancels[r.prov.ID]
				delete(cancels, r.prov.ID)
				finish()
				return r.resp, r.prov, win, nil
			}
			cancels[r.prov.ID]()
			delete(cancels, r.prov.ID)
			c.noteFailure(ctx, r.prov, r.err)
			errs = append(errs, fmt.Errorf("peer %s: %w", r.prov.ID, r.err))
			want = true
		case <-ctx.Done():
			finish()
			return nil, Provider{}, nil, ctx.Err()
		}
	}
}

// noteFailure shuns peers that cannot be reached; a plain 404 is no fault.
func (c *peerClient) noteFailure(ctx context.Context, p Provider, err error) {
	var nerr net.Error
	if ctx.Err() == nil && (errors.As(err, &nerr) || errors.Is(err, io.ErrUnexpectedEOF)) {
		c.log.Info("peer unreachable; shunned for a while", "peer", p.ID, "url", p.URL, "err", err)
		c.peers.Demote(p.ID, c.opts.DeadPenalty)
	}
}

// providerList buffers a look-up's providers so that a later resume can use
// the ones not tried yet. Each provider is handed out once.
type providerList struct {
	mu    sync.Mutex
	items []Provider
	seen  map[string]bool
	done  bool
	ch    chan struct{}
}

func collect(ctx context.Context, found <-chan Provider) *providerList {
	l := &providerList{seen: map[string]bool{}, ch: make(chan struct{})}
	go func() {
		defer l.update(func() { l.done = true })
		for {
			select {
			case p, ok := <-found:
				if !ok {
					return
				}
				l.update(func() {
					if !l.seen[p.ID] {
						l.seen[p.ID] = true
						l.items = append(l.items, p)
					}
				})
			case <-ctx.Done():
				return
			}
		}
	}()
	return l
}

func (l *providerList) update(fn func()) {
	l.mu.Lock()
	fn()
	close(l.ch)
	l.ch = make(chan struct{})
	l.mu.Unlock()
}

func (l *providerList) pop() (Provider, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.items) == 0 {
		return Provider{}, false
	}
	p := l.items[0]
	l.items = l.items[1:]
	return p, true
}

func (l *providerList) exhausted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.done && len(l.items) == 0
}

func (l *providerList) changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ch
}

// peerBlob is an inflight.Source over the providers of one digest. Each Open
// (a first fetch, or a resume after a failure) races the providers not yet
// tried.
type peerBlob struct {
	c     *peerClient
	req   Request
	mu    sync.Mutex
	provs *providerList
	used  []Provider // providers whose bytes are in the transfer
}

func (s *peerBlob) Kind() string  { return string(SourcePeer) }
func (s *peerBlob) Trusted() bool { return false }

func (s *peerBlob) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	s.mu.Lock()
	if s.provs == nil {
		s.provs = collect(ctx, s.c.peers.Find(ctx, s.req.Digest.String()))
	}
	provs := s.provs
	s.mu.Unlock()
	resp, p, cancel, err := s.c.race(ctx, provs, func(ctx context.Context, p Provider) (*http.Response, error) {
		hdr := http.Header{}
		want := http.StatusOK
		if off > 0 {
			hdr.Set("Range", "bytes="+strconv.FormatInt(off, 10)+"-")
			want = http.StatusPartialContent
		}
		resp, err := s.c.get(ctx, http.MethodGet, blobURL(p.URL, s.req.Name, s.req.Digest), hdr, want)
		if err != nil {
			return nil, err
		}
		// A size is required: unverified peer bytes go to disk, and a
		// stream of unknown length could fill it before the digest fails.
		if n, err := totalSize(resp, off); err != nil || n < 0 {
			resp.Body.Close()
			return nil, fmt.Errorf("%w: no usable size: %v", ErrPeer, err)
		}
		return resp, nil
	})
	if err != nil {
		return nil, 0, err
	}
	size, _ := totalSize(resp, off)
	s.mu.Lock()
	s.used = append(s.used, p)
	s.mu.Unlock()
	s.c.log.Debug("fetching from peer", "digest", s.req.Digest, "peer", p.ID, "offset", off)
	return newStallReader(resp.Body, s.c.opts.StallTimeout, cancel), size, nil
}

// Demote shuns every peer whose bytes went into a transfer that failed to
// verify: one of them lied, and we cannot tell which.
func (s *peerBlob) Demote(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range s.used {
		s.c.log.Warn("peer sent bytes that failed verification; shunned", "peer", p.ID, "digest", s.req.Digest, "err", err)
		s.c.peers.Demote(p.ID, s.c.opts.LiarPenalty)
	}
	s.used = nil
}

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

// stallReader gives up on a body that sends nothing for too long, so that the
// transfer can resume from another source instead of hanging.
type stallReader struct {
	body   io.ReadCloser
	timer  *time.Timer
	d      time.Duration
	cancel context.CancelFunc
}

func newStallReader(body io.ReadCloser, d time.Duration, cancel context.CancelFunc) *stallReader {
	return &stallReader{body: body, d: d, cancel: cancel, timer: time.AfterFunc(d, cancel)}
}

func (r *stallReader) Read(p []byte) (int, error) {
	n, err := r.body.Read(p)
	if n > 0 {
		r.timer.Reset(r.d)
	}
	return n, err
}

func (r *stallReader) Close() error {
	r.timer.Stop()
	err := r.body.Close()
	r.cancel()
	return err
}

// peerManifest fetches a manifest (by digest, or a tag with ns) from the
// providers of key and returns the first answer that verifies.
func (c *peerClient) peerManifest(ctx context.Context, key string, req Request) (*Manifest, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	provs := collect(ctx, c.peers.Find(ctx, key))
	url := func(p Provider) string {
		u := strings.TrimSuffix(p.URL, "/") + "/v2/" + req.Name + "/manifests/" + req.Reference()
		if req.Digest == "" {
			u += "?ns=" + req.NS
		}
		return u
	}
	for {
		var m *Manifest
		resp, p, done, err := c.race(ctx, provs, func(ctx context.Context, p Provider) (*http.Response, error) {
			return c.get(ctx, http.MethodGet, url(p), nil, http.StatusOK)
		})
		if err != nil {
			return nil, err
		}
		body := newStallReader(resp.Body, c.opts.StallTimeout, done) // a trickling peer must not hold the request
		b, rerr := io.ReadAll(io.LimitReader(body, MaxManifestSize+1))
		body.Close()
		dgst := req.Digest
		if dgst == "" {
			dgst, _ = oci.ParseDigest(resp.Header.Get("Docker-Content-Digest"))
		}
		if rerr == nil && len(b) <= MaxManifestSize && dgst != "" && digest.FromBytes(b) == dgst {
			if m, err = manifest(b, dgst, resp.Header.Get("Content-Type"), SourcePeer); err == nil {
				return m, nil
			}
		}
		c.log.Warn("peer sent a manifest that does not verify; shunned", "peer", p.ID, "key", key)
		c.peers.Demote(p.ID, c.opts.LiarPenalty)
	}
}

// peerBlobSize answers HEAD from the first provider that knows the blob.
func (c *peerClient) peerBlobSize(ctx context.Context, req Request) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	provs := collect(ctx, c.peers.Find(ctx, req.Digest.String()))
	resp, _, done, err := c.race(ctx, provs, func(ctx context.Context, p Provider) (*http.Response, error) {
		resp, err := c.get(ctx, http.MethodHead, blobURL(p.URL, req.Name, req.Digest), nil, http.StatusOK)
		if err == nil && resp.ContentLength < 0 {
			resp.Body.Close()
			return nil, errors.New("no Content-Length")
		}
		return resp, err
	})
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	done()
	return resp.ContentLength, nil
}
