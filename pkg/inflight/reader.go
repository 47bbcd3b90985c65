package inflight

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
)

// Reader is one consumer's view of a transfer. It is an io.ReadSeeker, and
// WriteRange streams a range straight from the window (or by sendfile from
// the spool) without an intermediate copy.
type Reader struct {
	t     *Transfer
	ctx   context.Context
	off   int64
	size  int64
	pos   int64 // where this reader needs bytes from; guarded by t.mu (window.go)
	end   int64 // where its range ends (exclusive), -1 for no end; guarded by t.mu
	relay bool  // a peer's reader (trust.go)
	// started and gen (guarded by t.mu): the transfer's generation when this
	// reader first asked for bytes.
	started   bool
	gen       int
	delivered bool     // it has been given bytes
	f         *os.File // this reader's own descriptor on the spool, opened when needed
	closed    bool
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

// maxSpan bounds one write to the destination, so that a reader re-checks the
// transfer's state (and wakes the filler) at least this often.
const maxSpan = 4 << 20

func (r *Reader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	sp, err := r.t.next(r.ctx, r, r.off, int64(len(p)))
	if err != nil {
		return 0, err
	}
	var n int
	if sp.c != nil {
		n = copy(p, sp.data)
	} else if err = r.openSpool(); err == nil {
		n, err = r.f.ReadAt(p[:sp.fileN], r.off)
	}
	r.off += int64(n)
	r.t.spanDone(r, sp, r.off)
	if err == nil && n == 0 {
		err = io.ErrNoProgress
	}
	return n, err
}

// WriteRange writes n bytes from offset off to w as they become readable: from
// the window with no copy, and from the spool by sendfile when w is an
// io.ReaderFrom that can take a file (an HTTP response on a TCP connection).
// It returns early with an error if the transfer fails; the caller must then
// abort its response.
func (r *Reader) WriteRange(w io.Writer, off, n int64) (int64, error) {
	r.off = off
	r.t.advance(func() { r.pos, r.end = off, off+n })
	var written int64
	for written < n {
		sp, err := r.t.next(r.ctx, r, r.off, min(n-written, maxSpan))
		if errors.Is(err, io.EOF) {
			return written, io.ErrUnexpectedEOF
		}
		if err != nil {
			return written, err
		}
		var k int64
		if sp.c != nil {
			var m int
			m, err = w.Write(sp.data)
			k = int64(m)
		} else {
			k, err = r.copyFile(w, sp.fileN)
		}
		r.off += k
		written += k
		r.t.spanDone(r, sp, r.off)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// copyFile copies n bytes of the spool at r.off to w.
func (r *Reader) copyFile(w io.Writer, n int64) (int64, error) {
	if err := r.openSpool(); err != nil {
		return 0, err
	}
	if _, err := r.f.Seek(r.off, io.SeekStart); err != nil {
		return 0, err
	}
	lr := &io.LimitedReader{R: r.f, N: n}
	if rf, ok := w.(io.ReaderFrom); ok {
		return rf.ReadFrom(lr) // sendfile on a TCP connection
	}
	return io.Copy(w, lr)
}

func (r *Reader) openSpool() error {
	if r.f != nil {
		return nil
	}
	path := r.t.spoolPath()
	if path == "" {
		return fmt.Errorf("%w: nothing spooled", ErrGone)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSpool, err)
	}
	r.f = f
	return nil
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
	r.t.advance(func() { r.pos = offset })
	return offset, nil
}

// Verify waits until the transfer has verified and checks it has the size
// this reader announced. The HTTP layer calls it before ending a response, and
// aborts the connection on an error: a body (even an empty one, which needs no
// Read) must never end cleanly before the bytes behind it are proven.
func (r *Reader) Verify(ctx context.Context) error {
	r.t.advance(func() { r.pos = math.MaxInt64 }) // it needs no more bytes
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
	if r.f != nil {
		r.f.Close()
	}
	t := r.t
	t.mu.Lock()
	defer t.mu.Unlock()
	t.broadcast(func() {
		t.readers = slices.DeleteFunc(t.readers, func(x *Reader) bool { return x == r })
	})
	if len(t.readers) == 0 && t.idle != nil {
		t.idle()
	}
	return nil
}

// needs says whether the reader has still to read some of c's bytes. t.mu is
// held.
func (r *Reader) needs(c *chunk) bool {
	return r.pos < c.end() && (r.end < 0 || c.off < r.end)
}
