package inflight

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrNoSource means no source could supply the blob.
var ErrNoSource = errors.New("no source has the blob")

// ErrSpool means the spool could not be created, written or read (a full
// disk, a read-only data directory): a failure of this node, not a miss.
var ErrSpool = errors.New("inflight: spool")

// Source is one place a blob can be read from, starting at any offset.
type Source interface {
	// Kind is the metrics label for bytes from this source: "upstream" or "peer".
	Kind() string
	// Trusted sources may stream to readers before the blob verifies (the
	// upstream is the reference: if it is wrong, so is everything). Bytes from
	// untrusted sources (peers) are held back until the digest checks, because
	// containerd keeps a partial body and resumes from it: a corrupt prefix it
	// has once received cannot be repaired by any later source.
	Trusted() bool
	// Open returns the blob's bytes from offset on, and the blob's total size
	// (-1 when unknown). It may be called again after a failure mid-stream, to
	// resume (a peer source then moves on to its next provider); it returns an
	// error once it has nothing more to offer. Errors from Open are returned to
	// the caller of Fetch when no source succeeds, so they should wrap a
	// meaningful sentinel.
	Open(ctx context.Context, offset int64) (io.ReadCloser, int64, error)
}

// Demoter is implemented by sources that want to know their bytes were bad.
type Demoter interface {
	Demote(err error)
}

// maxAttempts bounds how often one source is re-opened after mid-stream failures.
const maxAttempts = 3

// Config configures a Manager.
type Config struct {
	// Dir holds spool files. They are unlinked as soon as they are created, so a
	// crash leaves nothing behind and unverified bytes are never kept.
	Dir string
	// MaxSize refuses larger blobs (a hostile source could stream forever).
	// Default 64 GiB.
	MaxSize int64
	// Linger is how long a transfer without readers stays: an abandoned one keeps
	// going that long in case the client comes back with a Range request, and a
	// completed one stays servable. Default 30s.
	Linger time.Duration
	// StallTimeout abandons a source that sends nothing for this long, so a
	// body that stops without closing cannot hang every request for the
	// blob; the next attempt resumes. Default 30s.
	StallTimeout time.Duration
	// ChunkSize and WindowChunks size each transfer's memory window
	// (window.go): the most recent ChunkSize*WindowChunks bytes are held in
	// memory. Defaults 256 KiB and 8.
	ChunkSize    int
	WindowChunks int
	Logger       *slog.Logger
}

// Manager deduplicates transfers by digest.
type Manager struct {
	cfg    Config
	pool   *chunkPool
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu        sync.Mutex
	transfers map[digest.Digest]*entry
}

type entry struct {
	t        *Transfer
	cancel   context.CancelFunc
	finished chan struct{} // closed when the filler returns
	timer    *time.Timer
}

// New creates the spool directory if needed.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" {
		return nil, errors.New("inflight: Dir is required")
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = 64 << 30
	}
	if cfg.Linger <= 0 {
		cfg.Linger = 30 * time.Second
	}
	if cfg.StallTimeout <= 0 {
		cfg.StallTimeout = 30 * time.Second
	}
	if cfg.ChunkSize <= 0 {
		cfg.ChunkSize = 256 << 10
	}
	if cfg.WindowChunks < 2 {
		cfg.WindowChunks = 8
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("inflight: %w", err)
	}
	if err := removeStale(cfg.Dir); err != nil {
		return nil, fmt.Errorf("inflight: removing spool files left by an earlier run: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{cfg: cfg, pool: newChunkPool(cfg.ChunkSize, 2*cfg.WindowChunks), ctx: ctx, cancel: cancel,
		transfers: map[digest.Digest]*entry{}}, nil
}

// Close cancels every transfer, waits for the fillers to stop, and removes
// the spool files of transfers that nobody reads.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
	m.mu.Lock()
	var idle []*Transfer
	for d, e := range m.transfers {
		e.t.mu.Lock()
		if len(e.t.readers) == 0 {
			if e.timer != nil {
				e.timer.Stop()
			}
			delete(m.transfers, d)
			idle = append(idle, e.t)
		}
		e.t.mu.Unlock()
	}
	m.mu.Unlock()
	for _, t := range idle {
		t.close()
	}
}

// InFlight reports whether dgst is being fetched or was just completed.
func (m *Manager) InFlight(dgst digest.Digest) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.transfers[dgst] != nil
}

// Fetch returns a reader for dgst, joining the transfer in flight if there is
// one, or starting one from sources otherwise. It returns once a source has
// answered, so a miss costs one round trip per source and no more.
func (m *Manager) Fetch(ctx context.Context, dgst digest.Digest, sources []Source, opts ...Option) (*Reader, error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	m.mu.Lock()
	e := m.transfers[dgst]
	if e != nil && e.t.servableFrom() > 0 {
		// Its first bytes went by in memory and nobody kept them: a new
		// reader needs a transfer of its own. The old one carries on for
		// the readers it has, and goes when they do.
		m.detach(e)
		e = nil
	}
	if e == nil {
		if len(sources) == 0 {
			m.mu.Unlock()
			return nil, ErrNoSource
		}
		e = m.start(dgst, sources)
	}
	t := e.t
	r := &Reader{t: t, ctx: ctx, end: -1}
	t.mu.Lock()
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	var err error
	if len(t.readers) > 0 || o.shared {
		// Two readers cannot share one stream through memory (the slower
		// would hold the faster back): from here on the transfer spools.
		err = t.startSpool()
	}
	t.readers = append(t.readers, r)
	t.mu.Unlock()
	m.mu.Unlock()
	if err != nil {
		r.Close()
		return nil, err
	}

	size, err := t.waitOpen(ctx)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.size = size
	return r, nil
}

// Option adjusts one Fetch.
type Option func(*options)

type options struct{ shared bool }

// Shared makes the transfer spool from now on, even with one reader, because
// others are expected to follow it at their own pace (peers, in a cluster):
// a late reader can then start at any offset.
func Shared() Option { return func(o *options) { o.shared = true } }

// detach forgets e without stopping it while it has readers. m.mu is held.
func (m *Manager) detach(e *entry) {
	delete(m.transfers, e.t.dgst)
	e.t.mu.Lock()
	idle := len(e.t.readers) == 0
	if idle && e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	e.t.mu.Unlock()
	if idle {
		m.wg.Go(func() { m.release(e) })
	}
}

// start registers a new transfer; m.mu is held.
func (m *Manager) start(dgst digest.Digest, sources []Source) *entry {
	ctx, cancel := context.WithCancel(m.ctx)
	e := &entry{t: newTransfer(m, dgst), cancel: cancel, finished: make(chan struct{})}
	e.t.idle = func() { m.idle(e) }
	m.transfers[dgst] = e
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(e.finished)
		m.run(ctx, e.t, sources)
	}()
	return e
}

// idle runs under t.mu when the last reader leaves.
func (m *Manager) idle(e *entry) {
	if e.t.err != nil {
		m.wg.Go(func() { m.release(e) })
		return
	}
	e.timer = time.AfterFunc(m.cfg.Linger, func() { m.release(e) })
}

// release forgets a transfer that nobody reads, stopping it if unfinished.
func (m *Manager) release(e *entry) {
	m.mu.Lock()
	e.t.mu.Lock()
	if len(e.t.readers) > 0 {
		e.t.mu.Unlock()
		m.mu.Unlock()
		return
	}
	e.t.mu.Unlock()
	if m.transfers[e.t.dgst] == e {
		delete(m.transfers, e.t.dgst)
	}
	m.mu.Unlock()
	e.cancel()
	<-e.finished
	e.t.close()
}

// run fills the transfer from the sources in order, resuming at the current
// offset when one fails mid-stream. Untrusted sources must come before trusted
// ones, so that held-back (untrusted) bytes always start at offset 0 and a bad
// transfer can restart from scratch without any reader having seen a byte.
func (m *Manager) run(ctx context.Context, t *Transfer, sources []Source) {
	log := m.cfg.Logger.With("digest", t.dgst)
	h := t.dgst.Algorithm().Hash()
	var errs []error
	var contributors []Source // untrusted sources whose bytes are in the spool
	for _, src := range sources {
		for attempt := 0; attempt < maxAttempts; attempt++ {
			t.mu.Lock()
			off, size := t.written, t.size
			t.mu.Unlock()
			actx, stall := context.WithCancel(ctx)
			body, srcSize, err := src.Open(actx, off)
			if err != nil {
				stall()
				errs = append(errs, err)
				break // this source has nothing (more) to offer
			}
			if err := m.accept(t, src, srcSize, size); err != nil {
				stall()
				body.Close()
				errs = append(errs, err)
				if errors.Is(err, errFatal) {
					m.fail(t, errors.Join(errs...))
					return
				}
				break
			}
			if !src.Trusted() && !slices.Contains(contributors, src) {
				contributors = append(contributors, src)
			}
			wd := &watchdog{d: m.cfg.StallTimeout, t: time.AfterFunc(m.cfg.StallTimeout, stall)}
			err = t.fill(ctx, body, h, m.cfg.MaxSize, wd)
			wd.t.Stop()
			body.Close()
			stall()
			t.mu.Lock()
			written, size := t.written, t.size
			t.mu.Unlock()
			if err == nil && size >= 0 && written != size {
				err = fmt.Errorf("short body: %d of %d bytes: %w", written, size, io.ErrUnexpectedEOF)
			}
			if err != nil {
				if ctx.Err() != nil {
					m.fail(t, ctx.Err())
					return
				}
				log.Warn("source failed mid-stream; resuming", "source", src.Kind(), "offset", written, "err", err)
				errs = append(errs, err)
				continue
			}
			got := digest.NewDigest(t.dgst.Algorithm(), h)
			if got == t.dgst {
				t.advance(func() {
					t.done = true
					if t.size < 0 {
						t.size = t.written
					}
				})
				return
			}
			bad := fmt.Errorf("%w: %s sent %s", ErrDigestMismatch, src.Kind(), got)
			errs = append(errs, bad)
			if len(contributors) == 0 {
				// Trusted bytes were already streamed: every reader must abort.
				log.Error("digest mismatch; transfer aborted", "source", src.Kind(), "got", got)
				m.fail(t, bad)
				return
			}
			// Held-back bytes: nobody saw them, so blame the untrusted
			// sources that wrote them and start again from offset 0, with
			// this source once more (a peer source moves on to its next
			// provider), then the others.
			log.Warn("digest mismatch from untrusted sources; restarting", "got", got)
			for _, c := range contributors {
				if d, ok := c.(Demoter); ok {
					d.Demote(bad)
				}
			}
			contributors = nil
			if err := t.reset(h); err != nil {
				m.fail(t, errors.Join(bad, err))
				return
			}
		}
	}
	if len(errs) == 0 {
		errs = append(errs, ErrNoSource)
	}
	m.fail(t, errors.Join(errs...))
}

// errFatal marks a setup failure that no other source can fix.
var errFatal = errors.New("fatal")

// accept publishes the transfer as opened by src, creating the spool on first
// use, and checks src's declared size against what is known.
func (m *Manager) accept(t *Transfer, src Source, srcSize, size int64) error {
	if srcSize > m.cfg.MaxSize {
		return fmt.Errorf("%s: size %d over the %d limit", src.Kind(), srcSize, m.cfg.MaxSize)
	}
	if size >= 0 && srcSize >= 0 && srcSize != size {
		return fmt.Errorf("%s: size %d, expected %d", src.Kind(), srcSize, size)
	}
	if srcSize == 0 && t.dgst != t.dgst.Algorithm().FromBytes(nil) {
		return fmt.Errorf("%s: declares an empty body for a blob that is not empty", src.Kind())
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if !src.Trusted() {
		// Held bytes are all kept until the blob verifies: they must spool.
		if err := t.startSpool(); err != nil {
			return fmt.Errorf("%w: %w", errFatal, err)
		}
	}
	t.broadcast(func() {
		t.opened = true
		t.source = src.Kind()
		if !src.Trusted() {
			t.held = true
		}
		if t.size < 0 {
			t.size = srcSize
		}
		if src.Trusted() && srcSize >= 0 {
			t.sizeOK = true
		}
	})
	return nil
}

// fail records a terminal error and forgets the transfer so that the next
// request starts afresh.
func (m *Manager) fail(t *Transfer, err error) {
	m.mu.Lock()
	var e *entry
	if cur := m.transfers[t.dgst]; cur != nil && cur.t == t {
		e = cur
		delete(m.transfers, t.dgst)
	}
	m.mu.Unlock()
	t.advance(func() { t.err = err })
	t.mu.Lock()
	idle := len(t.readers) == 0
	t.mu.Unlock()
	if idle && e != nil {
		m.wg.Go(func() { <-e.finished; t.close() })
	}
}

// watchdog abandons a source that sends nothing for d. Time the filler spends
// waiting for its readers (a full window) is not the source's fault, so the
// watchdog is paused then.
type watchdog struct {
	d time.Duration
	t *time.Timer
}

func (w *watchdog) pause()  { w.t.Stop() }
func (w *watchdog) resume() { w.t.Reset(w.d) }
