package inflight

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
)

// ErrDigestMismatch means the bytes a source sent do not hash to the digest.
var ErrDigestMismatch = errors.New("digest mismatch")

// Transfer is one blob being fetched into a spool file.
type Transfer struct {
	dgst digest.Digest
	// file is the spool: readers use ReadAt, the filler writes. It is set by
	// the filler before opened is published and only read after that.
	file *os.File

	mu      sync.Mutex
	size    int64         // total size; -1 until a source tells
	written int64         // bytes in the spool file, hashed so far
	source  string        // which source supplied the bytes
	opened  bool          // a source has answered; size and source are known
	held    bool          // untrusted bytes are in the spool: nothing is readable until verified
	sizeOK  bool          // size came from a trusted source, so a restart keeps it
	done    bool          // verified and complete
	err     error         // terminal failure
	changed chan struct{} // closed and replaced whenever state advances
	readers int
	idle    func() // called (under mu) when readers drops to zero
}

func newTransfer(dgst digest.Digest) *Transfer {
	return &Transfer{dgst: dgst, size: -1, changed: make(chan struct{})}
}

// closeFile runs once the filler has finished and no reader is left.
func (t *Transfer) closeFile() {
	if t.file != nil {
		t.file.Close()
	}
}

// advance applies fn to the state under the lock and wakes every waiter.
func (t *Transfer) advance(fn func()) {
	t.mu.Lock()
	fn()
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// readable is how far readers may read: everything once verified, otherwise
// all but the final byte, which is what makes an unverified body incomplete.
func (t *Transfer) readable() int64 {
	switch {
	case t.done:
		return t.written
	case t.held || t.written == 0:
		return 0
	}
	return t.written - 1
}

// reset discards held-back bytes after a mismatch, so that the next source
// starts again from offset 0. Only valid while held: no reader saw a byte.
func (t *Transfer) reset(h hash.Hash) error {
	if err := t.file.Truncate(0); err != nil {
		return fmt.Errorf("spool: %w", err)
	}
	h.Reset()
	t.advance(func() {
		t.written, t.held = 0, false
		if !t.sizeOK {
			t.size = -1 // an untrusted source may have lied about the size too
		}
	})
	return nil
}

// waitOpen blocks until a source has answered (or the transfer failed).
func (t *Transfer) waitOpen(ctx context.Context) (size int64, err error) {
	for {
		t.mu.Lock()
		opened, size, err, ch := t.opened, t.size, t.err, t.changed
		t.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if opened {
			return size, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// ErrSizeChanged means a reader was told a size that the verified blob does
// not have (a source lied about it): its response must be aborted.
var ErrSizeChanged = errors.New("blob size differs from the size announced")

// readAt reads up to len(p) bytes at off, waiting for the filler as needed.
// declared is the size this reader announced (its Content-Length; -1 when
// none): its final byte is held back until the blob verifies at exactly that
// size, so no response can end cleanly on bytes of the wrong length.
func (t *Transfer) readAt(ctx context.Context, p []byte, off, declared int64) (int, error) {
	for {
		t.mu.Lock()
		avail, done, size, err, ch := t.readable(), t.done, t.size, t.err, t.changed
		t.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if done && declared >= 0 && size != declared {
			return 0, fmt.Errorf("%w: announced %d, verified %d", ErrSizeChanged, declared, size)
		}
		if !done && declared >= 0 && avail > declared-1 {
			avail = declared - 1
		}
		if off < avail {
			n := int64(len(p))
			if avail-off < n {
				n = avail - off
			}
			return t.file.ReadAt(p[:n], off)
		}
		if done {
			return 0, io.EOF
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// wait blocks until the transfer has verified or failed.
func (t *Transfer) wait(ctx context.Context) (size int64, err error) {
	for {
		t.mu.Lock()
		done, size, err, ch := t.done, t.size, t.err, t.changed
		t.mu.Unlock()
		if err != nil {
			return 0, err
		}
		if done {
			return size, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// fill copies src into the spool from the current offset, hashing as it goes.
// It returns nil when src reached EOF; the caller checks size and digest.
func (t *Transfer) fill(ctx context.Context, src io.Reader, h hash.Hash, maxSize int64, buf []byte) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			t.mu.Lock()
			off, size := t.written, t.size
			t.mu.Unlock()
			if limit := size; limit >= 0 && off+int64(n) > limit || off+int64(n) > maxSize {
				return fmt.Errorf("source sent more than %d bytes", min(max(size, 0), maxSize))
			}
			if _, err := t.file.WriteAt(buf[:n], off); err != nil {
				return fmt.Errorf("spool: %w", err)
			}
			h.Write(buf[:n])
			t.advance(func() { t.written += int64(n) })
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// Reader is one consumer's view of a transfer: an io.ReadSeeker, so that
// http.ServeContent can answer Range requests from it.
type Reader struct {
	t      *Transfer
	ctx    context.Context
	off    int64
	size   int64
	closed bool
}

// Size is the blob's size, or -1 when no source declared it.
func (r *Reader) Size() int64 { return r.size }

// Source names where the bytes come from ("upstream", "peer"); it may change
// while the transfer runs, when one source takes over from another.
func (r *Reader) Source() string {
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	return r.t.source
}

func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	n, err := r.t.readAt(r.ctx, p, r.off, r.size)
	r.off += int64(n)
	if err == nil && n == 0 {
		err = io.ErrNoProgress
	}
	return n, err
}

// Seek supports the offsets http.ServeContent needs; SeekEnd needs a known size.
func (r *Reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.off
	case io.SeekEnd:
		if r.size < 0 {
			return 0, errors.New("inflight: size unknown")
		}
		offset += r.size
	default:
		return 0, errors.New("inflight: bad whence")
	}
	if offset < 0 {
		return 0, errors.New("inflight: negative offset")
	}
	r.off = offset
	return offset, nil
}

// Verify waits until the transfer has verified and checks it has the size
// this reader announced. The HTTP layer calls it before ending a response, and
// aborts the connection on an error: a body (even an empty one, which needs no
// Read) must never end cleanly before the bytes behind it are proven.
func (r *Reader) Verify(ctx context.Context) error {
	size, err := r.t.wait(ctx)
	if err != nil {
		return err
	}
	if r.size >= 0 && size != r.size {
		return fmt.Errorf("%w: announced %d, verified %d", ErrSizeChanged, r.size, size)
	}
	return nil
}

// Close detaches the reader; the last one to leave may let the transfer go.
func (r *Reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	r.t.mu.Lock()
	defer r.t.mu.Unlock()
	r.t.readers--
	if r.t.readers == 0 && r.t.idle != nil {
		r.t.idle()
	}
	return nil
}
