package inflight

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/limits"
)

var errMissing = errors.New("missing")

// fakeSource serves data from any offset; it can corrupt, cut or stall.
type fakeSource struct {
	data     []byte
	declare  int64 // declared size; 0 means len(data)
	cutAt    int64 // stop with an error after this absolute offset (0: never)
	corrupt  bool
	missing  bool
	gate     chan struct{} // when set, the body blocks until it is closed
	peer     bool          // untrusted, like a peer
	opens    atomic.Int32
	lastOpen atomic.Int64
	demoted  atomic.Bool
}

func (s *fakeSource) Kind() string {
	if s.peer {
		return "peer"
	}
	return "upstream"
}
func (s *fakeSource) Trusted() bool    { return !s.peer }
func (s *fakeSource) Demote(err error) { s.demoted.Store(true) }

func (s *fakeSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	s.opens.Add(1)
	s.lastOpen.Store(off)
	if s.missing {
		return nil, 0, errMissing
	}
	data := bytes.Clone(s.data)
	if s.corrupt {
		data[len(data)/2] ^= 0xff
	}
	end := int64(len(data))
	var tail error
	if s.cutAt > 0 {
		end, tail = s.cutAt, io.ErrUnexpectedEOF
	}
	size := int64(len(s.data))
	if s.declare != 0 {
		size = s.declare
	}
	return io.NopCloser(&body{r: bytes.NewReader(data[off:end]), tail: tail, gate: s.gate}), size, nil
}

type body struct {
	r    *bytes.Reader
	tail error
	gate chan struct{}
}

func (b *body) Read(p []byte) (int, error) {
	if b.gate != nil {
		<-b.gate
	}
	n, err := b.r.Read(p)
	if err == io.EOF && b.tail != nil {
		return n, b.tail
	}
	return n, err
}

func blob(t *testing.T, n int) ([]byte, digest.Digest) {
	t.Helper()
	b := make([]byte, n)
	rand.Read(b)
	return b, digest.FromBytes(b)
}

func newManager(t *testing.T) *Manager {
	t.Helper()
	dir := t.TempDir()
	m, err := New(Config{Dir: dir, Limits: limits.Limits{Linger: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		m.Close()
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("spool dir not empty: %v", ents)
		}
	})
	return m
}

func readAll(t *testing.T, m *Manager, d digest.Digest, srcs []Source) ([]byte, error) {
	t.Helper()
	r, err := m.Fetch(context.Background(), d, srcs)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

func TestFetch(t *testing.T) {
	data, d := blob(t, 3<<20+17)
	tests := []struct {
		name    string
		sources func() []Source
		wantErr error // nil: the whole blob must come back
	}{
		{"one good source", func() []Source { return []Source{&fakeSource{data: data}} }, nil},
		{"missing then good", func() []Source {
			return []Source{&fakeSource{missing: true}, &fakeSource{data: data}}
		}, nil},
		{"cut mid-stream then resume", func() []Source {
			return []Source{&fakeSource{data: data, cutAt: 1<<20 + 5}, &fakeSource{data: data}}
		}, nil},
		{"all missing", func() []Source { return []Source{&fakeSource{missing: true}, &fakeSource{missing: true}} }, errMissing},
		{"corrupt", func() []Source { return []Source{&fakeSource{data: data, corrupt: true}} }, ErrDigestMismatch},
		{"cut with no other source", func() []Source { return []Source{&fakeSource{data: data, cutAt: 100}} }, io.ErrUnexpectedEOF},
		{"declares wrong size", func() []Source { return []Source{&fakeSource{data: data, declare: int64(len(data)) - 1}} }, nil},
		{"no sources", func() []Source { return nil }, ErrNoSource},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			got, err := readAll(t, m, d, tt.sources())
			if tt.name == "declares wrong size" {
				if err == nil {
					t.Fatal("oversized body accepted")
				}
				return
			}
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if len(got) >= len(data) {
					t.Fatalf("a failed transfer delivered %d bytes: the final byte must be held back", len(got))
				}
				return
			}
			if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes, err %v", len(got), err)
			}
		})
	}
}

func TestResumeOffset(t *testing.T) {
	data, d := blob(t, 1<<20)
	m := newManager(t)
	second := &fakeSource{data: data}
	got, err := readAll(t, m, d, []Source{&fakeSource{data: data, cutAt: 4242}, second})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("err %v", err)
	}
	if off := second.lastOpen.Load(); off != 4242 {
		t.Fatalf("second source opened at %d, want 4242", off)
	}
}

// Concurrent readers, some starting mid-blob, share one source fetch, and the
// final byte is not delivered before the whole blob is verified.
func TestSharedAndHeldBack(t *testing.T) {
	data, d := blob(t, 2<<20)
	m := newManager(t)
	gate := make(chan struct{})
	src := &fakeSource{data: data, gate: gate}
	const readers = 8
	var wg sync.WaitGroup
	results := make([][]byte, readers)
	errs := make([]error, readers)
	started := make(chan *Reader, readers)
	for i := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := m.Fetch(context.Background(), d, []Source{src})
			if err != nil {
				errs[i] = err
				started <- nil
				return
			}
			defer r.Close()
			off := int64(i) * 1000
			r.Seek(off, io.SeekStart)
			started <- r
			results[i], errs[i] = io.ReadAll(r)
		}()
	}
	for range readers {
		<-started
	}
	close(gate)
	wg.Wait()
	if n := src.opens.Load(); n != 1 {
		t.Fatalf("source opened %d times, want 1", n)
	}
	for i := range readers {
		if errs[i] != nil || !bytes.Equal(results[i], data[i*1000:]) {
			t.Fatalf("reader %d: err %v, %d bytes", i, errs[i], len(results[i]))
		}
	}
}

func TestHoldBackLastByte(t *testing.T) {
	data, d := blob(t, 1000)
	m := newManager(t)
	// A source that delivers everything but never reports EOF.
	pr, pw := io.Pipe()
	src := sourceFunc(func(ctx context.Context, off int64) (io.ReadCloser, int64, error) { return pr, 1000, nil })
	go pw.Write(data)
	r, err := m.Fetch(context.Background(), d, []Source{src})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	buf := make([]byte, 2000)
	n, _ := io.ReadAtLeast(r, buf, 999)
	if n != 999 {
		t.Fatalf("read %d bytes before verification, want 999", n)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	r.ctx = ctx
	if _, err := r.Read(buf); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("final byte readable before EOF and verification: %v", err)
	}
	pw.Close()
}

type sourceFunc func(context.Context, int64) (io.ReadCloser, int64, error)

func (f sourceFunc) Kind() string  { return "upstream" }
func (f sourceFunc) Trusted() bool { return true }
func (f sourceFunc) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	return f(ctx, off)
}

// An abandoned transfer is cancelled after Linger, and a fresh Fetch restarts.
func TestAbandonedTransferIsCancelled(t *testing.T) {
	data, d := blob(t, 1000)
	m := newManager(t)
	cancelled := make(chan struct{})
	src := sourceFunc(func(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
		pr, pw := io.Pipe()
		go func() { <-ctx.Done(); close(cancelled); pw.CloseWithError(ctx.Err()) }()
		return pr, int64(len(data)), nil
	})
	r, err := m.Fetch(context.Background(), d, []Source{src})
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	select {
	case <-cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("abandoned transfer kept running")
	}
	for m.InFlight(d) {
		time.Sleep(time.Millisecond)
	}
	if got, err := readAll(t, m, d, []Source{&fakeSource{data: data}}); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("refetch: %v", err)
	}
}

func TestMaxSize(t *testing.T) {
	data, d := blob(t, 10000)
	m, err := New(Config{Dir: t.TempDir(), Limits: limits.Limits{MaxBlobSize: 5000}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	src := &fakeSource{data: data, declare: -1}
	if _, err := readAll(t, m, d, []Source{src}); err == nil {
		t.Fatal("blob over MaxSize accepted")
	}
}

// Untrusted (peer) bytes are never readable before the blob verifies; a
// corrupt peer is demoted and the transfer restarts from the next source, so
// readers see one unbroken, correct body.
func TestUntrustedSources(t *testing.T) {
	data, d := blob(t, 2<<20+1)
	tests := []struct {
		name       string
		sources    func() (srcs []Source, liar *fakeSource)
		wantErr    error
		wantSource string
	}{
		{"good peer", func() ([]Source, *fakeSource) {
			return []Source{&fakeSource{data: data, peer: true}}, nil
		}, nil, "peer"},
		{"corrupt peer then upstream", func() ([]Source, *fakeSource) {
			liar := &fakeSource{data: data, peer: true, corrupt: true}
			return []Source{liar, &fakeSource{data: data}}, liar
		}, nil, "upstream"},
		{"peer dies mid-stream, upstream resumes", func() ([]Source, *fakeSource) {
			return []Source{&fakeSource{data: data, peer: true, cutAt: 777}, &fakeSource{data: data}}, nil
		}, nil, "upstream"},
		{"corrupt peer alone", func() ([]Source, *fakeSource) {
			liar := &fakeSource{data: data, peer: true, corrupt: true}
			return []Source{liar}, liar
		}, ErrDigestMismatch, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newManager(t)
			srcs, liar := tt.sources()
			r, err := m.Fetch(context.Background(), d, srcs)
			if err != nil {
				if tt.wantErr == nil || !errors.Is(err, tt.wantErr) {
					t.Fatalf("Fetch: %v", err)
				}
				return
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) || len(got) != 0 {
					t.Fatalf("err %v after %d bytes; want %v after none", err, len(got), tt.wantErr)
				}
			} else if err != nil || !bytes.Equal(got, data) {
				t.Fatalf("err %v, %d bytes", err, len(got))
			} else if r.Source() != tt.wantSource {
				t.Fatalf("source %q, want %q", r.Source(), tt.wantSource)
			}
			if liar != nil && !liar.demoted.Load() {
				t.Fatal("the corrupt peer was not demoted")
			}
		})
	}
}

func TestUntrustedHeldUntilVerified(t *testing.T) {
	data, d := blob(t, 1000)
	m := newManager(t)
	pr, pw := io.Pipe()
	src := &pipeSource{r: pr}
	type fetched struct {
		r   *Reader
		err error
	}
	ch := make(chan fetched, 1)
	go func() {
		r, err := m.Fetch(context.Background(), d, []Source{src})
		ch <- fetched{r, err}
	}()
	pw.Write(data[:999])
	// The node's own reader is not even told a size before the peer's bytes
	// are proven: it could be a lie.
	select {
	case f := <-ch:
		t.Fatalf("Fetch returned before verification: %v", f.err)
	case <-time.After(50 * time.Millisecond):
	}
	pw.Write(data[999:])
	pw.Close()
	f := <-ch
	if f.err != nil {
		t.Fatal(f.err)
	}
	defer f.r.Close()
	got, err := io.ReadAll(f.r)
	if err != nil || !bytes.Equal(got, data) || f.r.Size() != 1000 {
		t.Fatalf("after verification: %v, %d bytes", err, len(got))
	}
}

type pipeSource struct {
	r    io.ReadCloser
	size int64 // 0: 1000
}

func (p *pipeSource) Kind() string  { return "peer" }
func (p *pipeSource) Trusted() bool { return false }
func (p *pipeSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	if p.r == nil {
		return nil, 0, errMissing
	}
	r := p.r
	p.r = nil
	if p.size != 0 {
		return r, p.size, nil
	}
	return r, 1000, nil
}

// sizedSource lies about the size and sends only that many bytes, after gate
// is closed when one is set.
type sizedSource struct {
	data []byte
	size int64
	peer bool
	gate chan struct{}
}

func (s *sizedSource) Kind() string  { return "peer" }
func (s *sizedSource) Trusted() bool { return !s.peer }
func (s *sizedSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	end := min(s.size, int64(len(s.data)))
	if off > end {
		off = end
	}
	var r io.Reader = bytes.NewReader(s.data[off:end])
	if s.gate != nil {
		r = &body{r: bytes.NewReader(s.data[off:end]), gate: s.gate}
	}
	return io.NopCloser(r), s.size, nil
}

// Review findings: a lied-about size must never yield a clean body of that
// size, and must not poison the restart for honest sources.
func TestLiesAboutSize(t *testing.T) {
	data, d := blob(t, 4096)
	t.Run("empty body declared", func(t *testing.T) {
		m := newManager(t)
		_, err := readAll(t, m, d, []Source{&sizedSource{data: data, size: 0}})
		if err == nil {
			t.Fatal("a source declaring 0 bytes for a non-empty blob was accepted")
		}
	})
	t.Run("empty blob is fine", func(t *testing.T) {
		m := newManager(t)
		empty := digest.FromBytes(nil)
		got, err := readAll(t, m, empty, []Source{&sizedSource{size: 0}})
		if err != nil || len(got) != 0 {
			t.Fatalf("the empty blob: %v", err)
		}
	})
	t.Run("peer lies about size, upstream repairs", func(t *testing.T) {
		m := newManager(t)
		liar := &sizedSource{data: data, size: 100, peer: true}
		r, err := m.Fetch(context.Background(), d, []Source{liar, &fakeSource{data: data}})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		// The node's reader waited for proven bytes: it never heard the lie.
		if r.Size() != int64(len(data)) {
			t.Fatalf("reader told %d bytes, want %d", r.Size(), len(data))
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) || r.Verify(context.Background()) != nil {
			t.Fatalf("after the restart: %v, %d bytes", err, len(got))
		}
	})
	t.Run("trusted source lies about size", func(t *testing.T) {
		m := newManager(t)
		gate := make(chan struct{})
		liar := &sizedSource{data: data, size: 100, gate: gate}
		r, err := m.Fetch(context.Background(), d, []Source{liar})
		if err != nil {
			t.Fatal(err)
		}
		defer r.Close()
		close(gate)
		// This reader was told 100 bytes: it must fail, never end cleanly.
		if got, err := io.ReadAll(r); err == nil {
			t.Fatalf("a reader told the lied size got a clean %d-byte body", len(got))
		}
	})
}

// stallSource sends half the blob, then nothing until its context ends.
type stallSource struct {
	data  []byte
	opens atomic.Int32
}

func (s *stallSource) Kind() string  { return "upstream" }
func (s *stallSource) Trusted() bool { return true }
func (s *stallSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	if s.opens.Add(1) > 1 {
		return io.NopCloser(bytes.NewReader(s.data[off:])), int64(len(s.data)), nil
	}
	pr, pw := io.Pipe()
	go func() {
		pw.Write(s.data[:len(s.data)/2])
		<-ctx.Done()
		pw.CloseWithError(ctx.Err())
	}()
	return pr, int64(len(s.data)), nil
}

// A body that stops without closing is abandoned after StallTimeout and the
// transfer resumes, instead of hanging every request for the blob.
func TestStalledSourceResumes(t *testing.T) {
	data, d := blob(t, 64<<10)
	m, err := New(Config{Dir: t.TempDir(), Limits: limits.Limits{UpstreamStall: 100 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	src := &stallSource{data: data}
	got, err := readAll(t, m, d, []Source{src})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("err %v, %d bytes", err, len(got))
	}
	if src.opens.Load() != 2 {
		t.Fatalf("opened %d times, want a resume", src.opens.Load())
	}
}
