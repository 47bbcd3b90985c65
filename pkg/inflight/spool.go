package inflight

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// The spool: a transfer's bytes on disk, written only when they are needed.
//
// One reader streaming a blob never waits on the disk (window.go). The spool
// starts when a transfer must keep bytes that the window would drop:
//   - a second reader joins (another request for the digest, a Range request,
//     a peer reading the transfer in flight), and may be at any offset;
//   - the bytes are untrusted (from a peer): nothing is released before the
//     whole blob verifies, so all of it must be kept;
//   - the caller asks for it (Share), because others are expected to follow.
//
// A writer goroutine copies the window to the file in order, beside the
// filler, so the filler's loop stays one read and one hash pass. Chunks leave
// the window only once they are on file; readers behind the window read the
// file, by sendfile where the destination allows.
//
// Spool files are named <hex>-<random>.part in Config.Dir, so that the space
// they take is visible, and removed when the transfer ends; New removes any
// left by a crash, so nothing unverified outlives the process.

const spoolSuffix = ".part"

type spool struct {
	path  string
	f     *os.File
	start int64 // the first offset on file (> 0 when spooling began after the window moved on)
	filed int64 // bytes [start, filed) are on file
	err   error // a write failed: readers that need the file fail
	// reserved is what the manager promised this spool (Limits.MaxSpool):
	// the blob's size once known; it grows with the file when it is not.
	reserved int64
	stop     context.CancelFunc
	done     chan struct{} // closed when the writer has returned
}

// removeStale deletes spool files a previous process left behind.
func removeStale(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), spoolSuffix) {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// startSpool begins spooling from the start of the window. t.mu is held.
func (t *Transfer) startSpool() error {
	if t.spool != nil {
		return t.spool.err
	}
	f, err := os.CreateTemp(t.m.cfg.Dir, t.dgst.Encoded()+"-*"+spoolSuffix)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrSpool, err)
	}
	start := t.received
	if len(t.chunks) > 0 {
		start = t.chunks[0].off
	}
	var reserved int64
	if t.size > 0 {
		if err := t.m.reserve(t.size); err != nil {
			f.Close()
			os.Remove(f.Name())
			return err
		}
		reserved = t.size
	}
	// The manager's context, so that Close stops every writer.
	ctx, stop := context.WithCancel(t.m.ctx)
	s := &spool{path: f.Name(), f: f, start: start, filed: start, stop: stop, done: make(chan struct{}), reserved: reserved}
	t.spool = s
	t.m.wg.Go(func() {
		defer close(s.done)
		t.writeSpool(ctx, s)
	})
	return nil
}

// writeSpool copies the window to the file as bytes arrive, until stopped.
func (t *Transfer) writeSpool(ctx context.Context, s *spool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for {
		if ctx.Err() != nil || s.err != nil {
			return
		}
		c := t.windowChunk(s.filed)
		if c == nil || s.filed >= t.written {
			ch := t.changed
			t.mu.Unlock()
			select {
			case <-ch:
			case <-ctx.Done():
			}
			t.mu.Lock()
			continue
		}
		off, gen := s.filed, t.gen
		data := c.buf[off-c.off : min(c.end(), t.written)-c.off]
		end := off + int64(len(data))
		if end > s.reserved {
			// A size nobody declared: the promise grows with the file.
			if err := t.reserveSpool(max(end, s.reserved+int64(t.m.cfg.Limits.ChunkSize)*int64(t.m.cfg.Limits.WindowChunks))); err != nil {
				t.broadcast(func() { s.err = err })
				return
			}
		}
		c.pins++
		t.mu.Unlock()
		_, err := s.f.WriteAt(data, off)
		t.mu.Lock()
		t.unpin(c)
		if gen != t.gen {
			continue // a restart truncated the spool meanwhile
		}
		t.broadcast(func() {
			if err != nil {
				s.err = fmt.Errorf("%w: %w", ErrSpool, err)
				return
			}
			if end > s.filed {
				t.m.filed.Add(end - max(s.filed, 0))
			}
			s.filed = end
			if t.done {
				t.evict()
			}
		})
	}
}

// closeSpool stops the writer and removes the file. t.mu is not held.
func (t *Transfer) closeSpool() {
	t.mu.Lock()
	s := t.spool
	t.mu.Unlock()
	if s == nil {
		return
	}
	s.stop()
	<-s.done
	s.f.Close()
	os.Remove(s.path)
	t.mu.Lock()
	t.m.filed.Add(-(s.filed - s.start))
	t.m.unreserve(s.reserved)
	s.filed, s.reserved = s.start, 0
	t.mu.Unlock()
}

// reserveSpool raises the spool's promise to n bytes. t.mu is held.
func (t *Transfer) reserveSpool(n int64) error {
	s := t.spool
	if err := t.m.reserve(n - s.reserved); err != nil {
		return err
	}
	s.reserved = n
	return nil
}

// truncateSpool empties the spool for a restart from offset 0. t.mu is held.
func (t *Transfer) truncateSpool() error {
	if t.spool == nil {
		return nil
	}
	t.m.filed.Add(-(t.spool.filed - t.spool.start))
	t.spool.start, t.spool.filed = 0, 0
	if err := t.spool.f.Truncate(0); err != nil {
		return fmt.Errorf("%w: %w", ErrSpool, err)
	}
	return nil
}
