package inflight

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/limits"
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

// Finisher is implemented by sources that want to know how the transfer
// ended: nil once verified, or its final error. It is called before readers
// learn the outcome, so a source can tell others first.
type Finisher interface {
	Finished(err error)
}

var (
	// ErrFinal, wrapped in an error from Source.Open, ends the transfer at
	// once: no later source could do better (the upstream refused the blob,
	// and every node knows it).
	ErrFinal = errors.New("no source will have it")
	// ErrRestart, wrapped in an error from Source.Open, says the untrusted
	// bytes already received are suspect without anyone having lied (the peer
	// that relayed them rejected the blob itself): they are dropped, nobody is
	// demoted, and the source is opened again at offset 0.
	ErrRestart = errors.New("start again from the first byte")
	// ErrBusy: a peer asked to read a transfer that already feeds as many
	// peers as it may.
	ErrBusy = errors.New("transfer feeds enough peers already")
	// ErrFull: a limit on transfers or spool space is reached (FullError
	// says which).
	ErrFull = errors.New("transfer limit reached")
)

// FullError is a refusal because of a limit; Reason is "transfers" or
// "spool" (the shoal_refused_total label).
type FullError struct{ Reason string }

func (e *FullError) Error() string { return "transfer limit reached: " + e.Reason }
func (e *FullError) Unwrap() error { return ErrFull }

// Stats are a manager's gauges.
type Stats struct {
	Transfers  int   // transfers running or kept
	SpoolBytes int64 // bytes their spool files hold
}

// Config configures a Manager.
type Config struct {
	// Dir holds spool files (spool.go).
	Dir string
	// Limits: MaxBlobSize, Linger, UpstreamStall, ChunkSize, WindowChunks
	// and SourceAttempts apply here; zero fields take the defaults.
	Limits limits.Limits
	// OnReceive observes the bytes received from each kind of source
	// ("upstream", "peer"), as they arrive; may be nil.
	OnReceive func(kind string, n int)
	// OnRefused observes every refusal because of a limit, by reason; may
	// be nil.
	OnRefused func(reason string)
	Logger    *slog.Logger
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
	// running counts transfers still receiving, detached ones included; a
	// finished transfer kept for a moment (Linger) does not count.
	running int

	// The spool budget has a lock of its own, taken under m.mu or t.mu and
	// never taking either.
	budgetMu sync.Mutex
	reserved int64 // spool bytes promised to spooling transfers
	filed    atomic.Int64
}

// Stats returns the manager's gauges.
func (m *Manager) Stats() Stats {
	m.mu.Lock()
	defer m.mu.Unlock()
	return Stats{Transfers: m.running, SpoolBytes: m.filed.Load()}
}

// refuse counts and returns a refusal.
func (m *Manager) refuse(reason string) error {
	if m.cfg.OnRefused != nil {
		m.cfg.OnRefused(reason)
	}
	return &FullError{Reason: reason}
}

// reserve promises n spool bytes to a transfer, or refuses.
func (m *Manager) reserve(n int64) error {
	m.budgetMu.Lock()
	ok := m.reserved+n <= m.cfg.Limits.MaxSpool
	if ok {
		m.reserved += n
	}
	m.budgetMu.Unlock()
	if !ok {
		return m.refuse("spool")
	}
	return nil
}

func (m *Manager) unreserve(n int64) {
	m.budgetMu.Lock()
	m.reserved -= n
	m.budgetMu.Unlock()
}

type entry struct {
	t        *Transfer
	cancel   context.CancelFunc
	finished chan struct{} // closed when the filler returns
	timer    *time.Timer
}

// New creates the spool directory if needed, and empties it of spool files
// an earlier process left.
func New(cfg Config) (*Manager, error) {
	if cfg.Dir == "" {
		return nil, errors.New("inflight: Dir is required")
	}
	cfg.Limits = cfg.Limits.WithDefaults()
	if cfg.Limits.WindowChunks < 2 {
		cfg.Limits.WindowChunks = 2
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
	return &Manager{cfg: cfg, pool: newChunkPool(cfg.Limits.ChunkSize, 2*cfg.Limits.WindowChunks), ctx: ctx, cancel: cancel,
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
// answered, so a miss costs one round trip per source and no more; for the
// node's own reader of held (untrusted) bytes, once they have verified, so
// that it is only ever told a size that is proven (trust.go).
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
		if m.running >= m.cfg.Limits.MaxTransfers {
			m.mu.Unlock()
			return nil, m.refuse("transfers")
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
	if o.relay {
		r.relay = true
		if t.relays() >= o.maxRelays {
			err = fmt.Errorf("%w: %w", ErrBusy, m.refuse("relays"))
		}
	}
	if err == nil && (len(t.readers) > 0 || o.shared || o.relay) {
		// Two readers cannot share one stream through memory (the slower
		// would hold the faster back), and a peer reads at its own pace:
		// from here on the transfer spools.
		err = t.startSpool()
	}
	t.readers = append(t.readers, r)
	t.mu.Unlock()
	m.mu.Unlock()
	if err != nil {
		r.Close()
		return nil, err
	}

	size, err := t.waitOpen(ctx, !r.relay)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.size = size
	return r, nil
}

// Option adjusts one Fetch.
type Option func(*options)

type options struct {
	shared    bool
	relay     bool
	maxRelays int
}

// Shared makes the transfer spool from now on, even with one reader, because
// others are expected to follow it at their own pace (peers, in a cluster):
// a late reader can then start at any offset.
func Shared() Option { return func(o *options) { o.shared = true } }

// Relay makes the reader a peer's: it may read bytes that are not verified
// yet (the peer verifies them itself before its containerd sees any; see
// trust.go), and it is refused with ErrBusy when max peers already read the
// transfer.
func Relay(max int) Option {
	return func(o *options) { o.relay, o.maxRelays = true, max }
}

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
	m.running++
	m.wg.Add(1)
	go func() {
		defer m.wg.Done()
		defer close(e.finished)
		m.run(ctx, e.t, sources)
		m.mu.Lock()
		m.running--
		m.mu.Unlock()
	}()
	return e
}

// idle runs under t.mu when the last reader leaves.
func (m *Manager) idle(e *entry) {
	if e.t.err != nil || (e.t.done && e.t.spool == nil) {
		// Failed, or finished with nothing kept for anyone else (its bytes
		// went by in memory): nothing to linger for.
		m.wg.Go(func() { m.release(e) })
		return
	}
	d := m.cfg.Limits.Linger
	if !e.t.done {
		// Abandoned half-way: kept only for the client to come back with a
		// Range request, briefly, so that dropped requests cannot hold
		// transfer slots and spool space for long.
		d = m.cfg.Limits.AbandonGrace
	}
	e.timer = time.AfterFunc(d, func() { m.release(e) })
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
	f := &filler{m: m, t: t, h: t.dgst.Algorithm().Hash(), log: m.cfg.Logger.With("digest", t.dgst)}
	err := f.fill(ctx, sources)
	// Sources hear the outcome before readers do (Finisher).
	for _, src := range sources {
		if fin, ok := src.(Finisher); ok {
			fin.Finished(err)
		}
	}
	if err != nil {
		m.fail(t, err)
		return
	}
	t.advance(func() {
		t.done = true
		if t.size < 0 {
			t.size = t.written
		}
		if t.spool != nil {
			t.evict()
		}
	})
}

// filler is one transfer's filling state.
type filler struct {
	m    *Manager
	t    *Transfer
	h    hash.Hash
	log  *slog.Logger
	errs []error
	// contributors are the untrusted sources whose bytes are in the
	// transfer, by index: sources need not be comparable.
	contributors map[int]Source
}

// fill returns nil once the blob has verified.
func (f *filler) fill(ctx context.Context, sources []Source) error {
	t, lim := f.t, f.m.cfg.Limits
	for i, src := range sources {
		for attempt := 0; attempt < lim.SourceAttempts; attempt++ {
			t.mu.Lock()
			off, size, sizeOK := t.written, t.size, t.sizeOK
			t.mu.Unlock()
			actx, stall := context.WithCancel(ctx)
			body, srcSize, err := src.Open(actx, off)
			if err != nil {
				stall()
				if errors.Is(err, ErrRestart) && f.restartable() {
					f.log.Info("source asks to start again; dropping held bytes", "source", src.Kind(), "err", err)
					if err := f.restart(); err != nil {
						return errors.Join(append(f.errs, err)...)
					}
					continue
				}
				f.errs = append(f.errs, err)
				if errors.Is(err, ErrFinal) {
					return errors.Join(f.errs...)
				}
				break // this source has nothing (more) to offer
			}
			if size >= 0 && srcSize >= 0 && srcSize != size && !sizeOK && f.restartable() {
				// The size we have came from an untrusted source. A trusted
				// one contradicting it proves that source lied; another
				// untrusted one proves nothing yet, but its word is as good,
				// and the digest will tell. Either way the held bytes go.
				lie := fmt.Errorf("%w: declared %d bytes, %s declares %d", ErrSizeChanged, size, src.Kind(), srcSize)
				if src.Trusted() {
					f.blame(lie)
				}
				f.log.Warn("sources disagree on the size; dropping held bytes", "err", lie)
				if err := f.restart(); err != nil {
					stall()
					body.Close()
					return errors.Join(append(f.errs, err)...)
				}
				t.advance(func() { t.size = -1 })
				size = -1
				if off != 0 {
					// Its body starts where the held bytes ended: open it
					// again from the first byte.
					stall()
					body.Close()
					continue
				}
			}
			if err := f.m.accept(t, src, srcSize, size); err != nil {
				stall()
				body.Close()
				f.errs = append(f.errs, err)
				if errors.Is(err, errFatal) {
					return errors.Join(f.errs...)
				}
				break
			}
			if !src.Trusted() {
				if f.contributors == nil {
					f.contributors = map[int]Source{}
				}
				f.contributors[i] = src
			}
			wd := &watchdog{d: lim.UpstreamStall, t: time.AfterFunc(lim.UpstreamStall, stall)}
			err = t.fill(ctx, f.counted(src, body), f.h, lim.MaxBlobSize, wd)
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
					return ctx.Err()
				}
				f.log.Warn("source failed mid-stream; resuming", "source", src.Kind(), "offset", written, "err", err)
				f.errs = append(f.errs, err)
				continue
			}
			got := digest.NewDigest(t.dgst.Algorithm(), f.h)
			if got == t.dgst {
				return nil
			}
			bad := fmt.Errorf("%w: %s sent %s", ErrDigestMismatch, src.Kind(), got)
			f.errs = append(f.errs, bad)
			if !f.restartable() {
				// Trusted bytes were already streamed: every reader must abort.
				f.log.Error("digest mismatch; transfer aborted", "source", src.Kind(), "got", got)
				return bad
			}
			// Held-back bytes: nobody saw them, so blame the untrusted
			// sources that wrote them and start again from offset 0, with
			// this source once more (a peer source moves on to its next
			// provider), then the others.
			f.log.Warn("digest mismatch from untrusted sources; restarting", "got", got)
			f.blame(bad)
			if err := f.restart(); err != nil {
				return errors.Join(bad, err)
			}
		}
	}
	if len(f.errs) == 0 {
		f.errs = append(f.errs, ErrNoSource)
	}
	return errors.Join(f.errs...)
}

// counted reports the bytes a source sends to Config.OnReceive.
func (f *filler) counted(src Source, body io.ReadCloser) io.ReadCloser {
	if f.m.cfg.OnReceive == nil {
		return body
	}
	return &countingBody{body, src.Kind(), f.m.cfg.OnReceive}
}

type countingBody struct {
	io.ReadCloser
	kind string
	on   func(string, int)
}

func (b *countingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.on(b.kind, n)
	}
	return n, err
}

// restartable: every byte in the transfer is held, so no reader of the
// node's own has seen one, and the transfer may start again from zero.
func (f *filler) restartable() bool {
	f.t.mu.Lock()
	defer f.t.mu.Unlock()
	return f.t.held || f.t.written == 0
}

// blame tells the untrusted sources whose bytes are in the transfer that
// they were bad.
func (f *filler) blame(err error) {
	for _, c := range f.contributors {
		if d, ok := c.(Demoter); ok {
			d.Demote(err)
		}
	}
	f.contributors = nil
}

// restart drops the held bytes and starts from offset 0.
func (f *filler) restart() error {
	f.contributors = nil
	return f.t.reset(f.h)
}

// errFatal marks a setup failure that no other source can fix.
var errFatal = errors.New("fatal")

// accept publishes the transfer as opened by src, creating the spool on first
// use, and checks src's declared size against what is known.
func (m *Manager) accept(t *Transfer, src Source, srcSize, size int64) error {
	if srcSize > m.cfg.Limits.MaxBlobSize {
		return fmt.Errorf("%s: size %d over the %d limit", src.Kind(), srcSize, m.cfg.Limits.MaxBlobSize)
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
	if t.spool != nil && srcSize > t.spool.reserved {
		if err := t.reserveSpool(srcSize); err != nil {
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
