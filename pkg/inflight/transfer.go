package inflight

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"sync"

	"github.com/opencontainers/go-digest"
)

// ErrDigestMismatch means the bytes a source sent do not hash to the digest.
var ErrDigestMismatch = errors.New("digest mismatch")

// errRestarted: the transfer started again from offset 0 under a reader.
var errRestarted = errors.New("transfer restarted from the first byte")

// ErrGone means a reader asked for bytes this transfer no longer holds: they
// left the memory window before anything spooled them (a late reader, or a
// Range request far behind). The caller answers as for a miss.
var ErrGone = errors.New("bytes no longer held by the transfer")

// Transfer is one blob being fetched: a window of recent bytes in memory
// (window.go) and, when needed, a spool file (spool.go).
type Transfer struct {
	dgst      digest.Digest
	m         *Manager
	closeOnce sync.Once

	mu       sync.Mutex
	size     int64    // total size; -1 until a source tells
	written  int64    // bytes received and hashed so far: what readers may see (trust.go)
	received int64    // bytes received so far (>= written)
	chunks   []*chunk // the window: contiguous, ending at received
	spool    *spool   // nil while one reader streams from memory
	gen      int      // bumped by a restart, so the spool writer drops stale writes
	readers  []*Reader
	source   string        // which source supplied the bytes
	opened   bool          // a source has answered; size and source are known
	held     bool          // untrusted bytes are in the transfer (trust.go)
	sizeOK   bool          // size came from a trusted source, so a restart keeps it
	done     bool          // verified and complete
	err      error         // terminal failure
	changed  chan struct{} // closed and replaced whenever state advances
	idle     func()        // called (under mu) when the last reader leaves
}

func newTransfer(m *Manager, dgst digest.Digest) *Transfer {
	return &Transfer{m: m, dgst: dgst, size: -1, changed: make(chan struct{})}
}

// broadcast applies fn to the state and wakes every waiter. t.mu is held.
func (t *Transfer) broadcast(fn func()) {
	fn()
	close(t.changed)
	t.changed = make(chan struct{})
}

// advance is broadcast for callers that do not hold t.mu.
func (t *Transfer) advance(fn func()) {
	t.mu.Lock()
	t.broadcast(fn)
	t.mu.Unlock()
}

// wakeup waits for the next state change or the end of ctx. t.mu is held on
// entry and on return.
func (t *Transfer) wakeup(ctx context.Context) error {
	ch := t.changed
	t.mu.Unlock()
	defer t.mu.Lock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close releases the window and the spool once the filler has finished and no
// reader is left.
func (t *Transfer) close() {
	t.closeOnce.Do(func() {
		t.closeSpool()
		t.mu.Lock()
		t.dropWindow()
		t.mu.Unlock()
	})
}

// reset discards held-back bytes after a mismatch, so that the next source
// starts again from offset 0. Only valid while held: no reader saw a byte.
func (t *Transfer) reset(h hash.Hash) error {
	h.Reset()
	t.mu.Lock()
	defer t.mu.Unlock()
	var err error
	t.broadcast(func() {
		t.gen++
		t.dropWindow()
		err = t.truncateSpool()
		t.written, t.received, t.held = 0, 0, false
		t.opened = false // readers waiting for a source wait for the next one
		if !t.sizeOK {
			t.size = -1 // an untrusted source may have lied about the size too
		}
	})
	return err
}

// waitOpen blocks until a source has answered (or the transfer failed), and
// with proven, until no held byte is in the way: the bytes verified, or they
// come from a trusted source.
func (t *Transfer) waitOpen(ctx context.Context, proven bool) (size int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		if t.err != nil {
			return 0, t.err
		}
		if t.opened && (!proven || t.done || !t.held) {
			return t.size, nil
		}
		if err := t.wakeup(ctx); err != nil {
			return 0, err
		}
	}
}

// wait blocks until the transfer has verified or failed.
func (t *Transfer) wait(ctx context.Context) (size int64, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		if t.err != nil {
			return 0, t.err
		}
		if t.done {
			return t.size, nil
		}
		if err := t.wakeup(ctx); err != nil {
			return 0, err
		}
	}
}

// room returns the chunk the receiver reads into next, waiting while the
// window is full of bytes that must stay (window.go).
func (t *Transfer) room(ctx context.Context) (*chunk, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		if n := len(t.chunks); n > 0 && len(t.chunks[n-1].buf) < cap(t.chunks[n-1].buf) {
			return t.chunks[n-1], nil
		}
		if len(t.chunks) >= t.m.cfg.Limits.WindowChunks {
			// Only when full: what stays in the window may still serve a
			// reader that joins late, or comes back with a Range request.
			t.evict()
		}
		if len(t.chunks) < t.m.cfg.Limits.WindowChunks {
			c := &chunk{off: t.received, buf: t.m.pool.get()}
			t.chunks = append(t.chunks, c)
			return c, nil
		}
		if t.spool != nil && t.spool.err != nil {
			return nil, t.spool.err
		}
		if err := t.wakeup(ctx); err != nil {
			return nil, err
		}
	}
}

// receiving is the receiver's state during one fill; guarded by t.mu.
type receiving struct {
	done bool
	err  error // nil when the source reached EOF
}

// fill copies src into the transfer from the current offset and hashes it:
// one read into the window and one hash pass per byte. Reading and hashing
// run side by side, so that the hash, the one step every byte must take,
// never waits on a socket. It returns nil when src reached EOF and every byte
// is hashed; the caller checks size and digest.
func (t *Transfer) fill(ctx context.Context, src io.ReadCloser, h hash.Hash, maxSize int64, wd *watchdog) error {
	st := &receiving{}
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		err := t.receive(ctx, src, maxSize, wd)
		t.advance(func() { st.done, st.err = true, err })
	}()
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		for t.written == t.received && !st.done {
			if err := t.wakeup(ctx); err != nil {
				t.mu.Unlock()
				src.Close() // unblocks the receiver's Read
				<-finished
				t.mu.Lock()
				return err
			}
		}
		if t.written == t.received {
			err := st.err
			t.mu.Unlock()
			<-finished
			t.mu.Lock()
			return err
		}
		// Received bytes stay in the window until hashed (evictable), and the
		// receiver only appends past them, so they can be read unlocked.
		c := t.windowChunk(t.written)
		data := c.buf[t.written-c.off:]
		t.mu.Unlock()
		h.Write(data)
		t.mu.Lock()
		t.broadcast(func() { t.written += int64(len(data)) })
	}
}

// receive reads src into the window until EOF or an error.
func (t *Transfer) receive(ctx context.Context, src io.Reader, maxSize int64, wd *watchdog) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		wd.pause()
		c, err := t.room(ctx)
		wd.resume()
		if err != nil {
			return err
		}
		// The receiver is the only writer of the tail's spare capacity, and
		// everyone else looks only below received, so no lock is needed.
		free := c.buf[len(c.buf):cap(c.buf)]
		n, rerr := src.Read(free)
		if n > 0 {
			wd.resume()
			t.mu.Lock()
			off, size := t.received, t.size
			if limit := size; limit >= 0 && off+int64(n) > limit || off+int64(n) > maxSize {
				t.mu.Unlock()
				return fmt.Errorf("source sent more than %d bytes", min(max(size, 0), maxSize))
			}
			t.broadcast(func() {
				c.buf = c.buf[:len(c.buf)+n]
				t.received += int64(n)
			})
			t.mu.Unlock()
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// ErrSizeChanged means a reader was told a size that the verified blob does
// not have (a source lied about it): its response must be aborted.
var ErrSizeChanged = errors.New("blob size differs from the size announced")

// span is what a reader may take next: bytes in a pinned chunk, or a range of
// the spool file.
type span struct {
	c     *chunk // pinned; nil for a file span
	data  []byte
	fileN int64
}

// next waits until bytes at off are readable by r (trust.go) and returns at
// most max of them. The caller must call spanDone with the span.
func (t *Transfer) next(ctx context.Context, r *Reader, off, max int64) (span, error) {
	declared := r.size
	t.mu.Lock()
	defer t.mu.Unlock()
	if r.pos != off {
		t.broadcast(func() { r.pos = off }) // the filler may wait for this reader to move on
	}
	if !r.started {
		r.started, r.gen = true, t.gen
	}
	for {
		if t.err != nil {
			return span{}, t.err
		}
		if r.gen != t.gen {
			if r.relay && r.delivered {
				// The transfer dropped held bytes this reader (a peer's)
				// has sent on: its body must be aborted, never completed.
				return span{}, errRestarted
			}
			r.gen = t.gen // it saw nothing of what was dropped
		}
		if t.done && declared >= 0 && t.size != declared {
			return span{}, fmt.Errorf("%w: announced %d, verified %d", ErrSizeChanged, declared, t.size)
		}
		if avail := t.readable(declared, r.relay); off < avail {
			n := min(avail-off, max)
			if c := t.windowChunk(off); c != nil {
				c.pins++
				return span{c: c, data: c.buf[off-c.off : min(c.end(), off+n)-c.off]}, nil
			}
			if s := t.spool; s != nil && off >= s.start && off < s.filed {
				return span{fileN: min(n, s.filed-off)}, nil
			}
			return span{}, fmt.Errorf("%w: offset %d", ErrGone, off)
		}
		if t.done {
			return span{}, io.EOF
		}
		if err := t.wakeup(ctx); err != nil {
			return span{}, err
		}
	}
}

// done ends a span: the reader is now at pos.
func (t *Transfer) spanDone(r *Reader, sp span, pos int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.broadcast(func() {
		r.pos = pos
		r.delivered = true
		if sp.c != nil {
			t.unpin(sp.c)
		}
	})
}

// spoolPath is the spool file's name, for readers that open their own
// descriptor on it.
func (t *Transfer) spoolPath() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.spool == nil {
		return ""
	}
	return t.spool.path
}

// relays counts the peers reading the transfer. t.mu is held.
func (t *Transfer) relays() int {
	n := 0
	for _, r := range t.readers {
		if r.relay {
			n++
		}
	}
	return n
}
