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
	Logger       *slog.Logger
}

// Manager deduplicates transfers by digest.
type Manager struct {
	cfg    Config
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
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("inflight: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Manager{cfg: cfg, ctx: ctx, cancel: cancel, transfers: map[digest.Digest]*entry{}}, nil
}

// Close cancels every transfer and waits for the fillers to stop.
func (m *Manager) Close() {
	m.cancel()
	m.wg.Wait()
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
func (m *Manager) Fetch(ctx context.Context, dgst digest.Digest, sources []Source) (*Reader, error) {
	m.mu.Lock()
	e := m.transfers[dgst]
	if e == nil {
		if len(sources) == 0 {
			m.mu.Unlock()
			return nil, ErrNoSource
		}
		e = m.start(dgst, sources)
	}
	t := e.t
	t.mu.Lock()
	t.readers++
	if e.timer != nil {
		e.timer.Stop()
		e.timer = nil
	}
	t.mu.Unlock()
	m.mu.Unlock()

	r := &Reader{t: t, ctx: ctx}
	size, err := t.waitOpen(ctx)
	if err != nil {
		r.Close()
		return nil, err
	}
	r.size = size
	return r, nil
}

// start registers a new transfer; m.mu is held.
func (m *Manager) start(dgst digest.Digest, sources []Source) *entry {
	ctx, cancel := context.WithCancel(m.ctx)
	e := &entry{t: newTransfer(dgst), cancel: cancel, finished: make(chan struct{})}
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

// spool creates the transfer's file, unlinked at once: readers and the filler
// share the descriptor, and the bytes vanish with it whatever happens to the
// process. It is made only once a source answers, so a miss touches no disk.
func (m *Manager) spool(dgst digest.Digest) (*os.File, error) {
	f, err := os.CreateTemp(m.cfg.Dir, dgst.Encoded()+"-*")
	if err != nil {
		return nil, fmt.Errorf("inflight: spool: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("inflight: spool: %w", err)
	}
	return f, nil
}

// idle runs under t.mu when the last reader leaves.
func (m *Manager) idle(e *entry) {
	if e.t.err != nil {
		go m.release(e)
		return
	}
	e.timer = time.AfterFunc(m.cfg.Linger, func() { m.release(e) })
}

// release forgets a transfer that nobody reads, stopping it if unfinished.
func (m *Manager) release(e *entry) {
	m.mu.Lock()
	e.t.mu.Lock()
	if e.t.readers > 0 {
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
	e.t.closeFile()
}

// run fills the transfer from the sources in order, resuming at the current
// offset when one fails mid-stream. Untrusted sources must come before trusted
// ones, so that held-back (untrusted) bytes always start at offset 0 and a bad
// transfer can restart from scratch without any reader having seen a byte.
func (m *Manager) run(ctx context.Context, t *Transfer, sources []Source) {
	log := m.cfg.Logger.With("digest", t.dgst)
	h := t.dgst.Algorithm().Hash()
	buf := make([]byte, 256<<10)
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
			watchdog := time.AfterFunc(m.cfg.StallTimeout, stall)
			err = t.fill(ctx, progress{body, func() { watchdog.Reset(m.cfg.StallTimeout) }}, h, m.cfg.MaxSize, buf)
			watchdog.Stop()
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
	if t.file == nil {
		f, err := m.spool(t.dgst)
		if err != nil {
			return fmt.Errorf("%w: %w", errFatal, err)
		}
		t.file = f // before opened is published: readers only look after that
	}
	t.advance(func() {
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
	idle := t.readers == 0
	t.mu.Unlock()
	if idle && e != nil {
		go func() { <-e.finished; t.closeFile() }()
	}
}

// progress calls tick whenever bytes arrive (the stall watchdog's reset).
type progress struct {
	io.Reader
	tick func()
}

func (p progress) Read(b []byte) (int, error) {
	n, err := p.Reader.Read(b)
	if n > 0 {
		p.tick()
	}
	return n, err
}
