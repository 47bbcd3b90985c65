package inflight

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// A peer's reader gets held (untrusted) bytes as they arrive, all but the
// last, while the node's own reader gets nothing until the blob verifies.
func TestRelayReadsHeldBytes(t *testing.T) {
	data, d := blob(t, 1<<20)
	m := newManager(t)
	pr, pw := io.Pipe()
	src := &pipeSource{r: pr, size: int64(len(data))}
	localc := make(chan *Reader, 1)
	go func() {
		r, err := m.Fetch(context.Background(), d, []Source{src})
		if err != nil {
			t.Error(err)
		}
		localc <- r
	}()
	var relay *Reader
	for {
		r, err := m.Fetch(context.Background(), d, nil, Relay(2))
		if err == nil {
			relay = r
			break
		}
		time.Sleep(time.Millisecond) // the transfer is not registered yet
	}
	defer relay.Close()
	go pw.Write(data[:len(data)/2])
	got := make([]byte, len(data)/2)
	if _, err := io.ReadFull(relay, got[:len(got)-1]); err != nil || !bytes.Equal(got[:len(got)-1], data[:len(got)-1]) {
		t.Fatalf("relay reader: %v", err)
	}
	select {
	case <-localc:
		t.Fatal("the node's own reader was answered before the held bytes verified")
	case <-time.After(50 * time.Millisecond):
	}
	pw.Write(data[len(data)/2:])
	pw.Close()
	rest, err := io.ReadAll(relay)
	if err != nil || !bytes.Equal(append(got[:len(got)-1], rest...), data) || relay.Verify(context.Background()) != nil {
		t.Fatalf("relay after verification: %v", err)
	}
	local := <-localc
	defer local.Close()
	all, err := io.ReadAll(local)
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("local after verification: %v", err)
	}
}

// A transfer feeds at most so many peers.
func TestRelayCap(t *testing.T) {
	data, d := blob(t, 1000)
	m := newManager(t)
	gate := make(chan struct{})
	defer close(gate)
	// A trusted source: the node's own reader is answered at once.
	local, err := m.Fetch(context.Background(), d, []Source{&sizedSource{data: data, size: 1000, gate: gate}})
	if err != nil {
		t.Fatal(err)
	}
	defer local.Close()
	for i := range 3 {
		r, err := m.Fetch(context.Background(), d, nil, Relay(2))
		if i < 2 {
			if err != nil {
				t.Fatalf("relay %d refused: %v", i, err)
			}
			defer r.Close()
		} else if !errors.Is(err, ErrBusy) {
			t.Fatalf("relay %d: err %v, want ErrBusy", i, err)
		}
	}
}

// When held bytes turn out bad, a peer that was already sent some of them
// must see its body fail, never complete; the node's own reader gets the
// repaired blob from the next source.
func TestRelayAbortedOnRestart(t *testing.T) {
	data, d := blob(t, 1<<20)
	m := newManager(t)
	bad := bytes.Clone(data)
	bad[len(bad)-10] ^= 1
	pr, pw := io.Pipe()
	liar := &demotedPipe{pipeSource: pipeSource{r: pr, size: int64(len(data))}}
	localc := make(chan *Reader, 1)
	go func() {
		r, err := m.Fetch(context.Background(), d, []Source{liar, &fakeSource{data: data}})
		if err != nil {
			t.Error(err)
		}
		localc <- r
	}()
	var relay *Reader
	for {
		r, err := m.Fetch(context.Background(), d, nil, Relay(2))
		if err == nil {
			relay = r
			break
		}
		time.Sleep(time.Millisecond)
	}
	defer relay.Close()
	go pw.Write(bad[:len(bad)/2])
	if _, err := io.ReadFull(relay, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	go func() { pw.Write(bad[len(bad)/2:]); pw.Close() }()
	if _, err := io.ReadAll(relay); err == nil {
		t.Fatal("a peer sent corrupt held bytes got a clean body")
	}
	local := <-localc
	defer local.Close()
	got, err := io.ReadAll(local)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("local: %v", err)
	}
	if !liar.demoted.Load() {
		t.Fatal("liar not demoted")
	}
}

type demotedPipe struct {
	pipeSource
	demoted atomic.Bool
}

func (p *demotedPipe) Demote(error) { p.demoted.Store(true) }

// finalSource fails with ErrFinal; restartSource asks once to restart.
type scriptSource struct {
	errs     []error // returned by successive Opens before serving data
	data     []byte
	peer     bool
	opens    atomic.Int32
	finished atomic.Value
}

func (s *scriptSource) Kind() string {
	if s.peer {
		return "peer"
	}
	return "upstream"
}
func (s *scriptSource) Trusted() bool      { return !s.peer }
func (s *scriptSource) Finished(err error) { s.finished.Store(fmt.Sprint(err)) }
func (s *scriptSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	n := int(s.opens.Add(1)) - 1
	if n < len(s.errs) {
		return nil, 0, s.errs[n]
	}
	return io.NopCloser(bytes.NewReader(s.data[off:])), int64(len(s.data)), nil
}

func TestFinalAndRestart(t *testing.T) {
	data, d := blob(t, 64<<10)
	t.Run("final error ends the transfer before later sources", func(t *testing.T) {
		m := newManager(t)
		first := &scriptSource{errs: []error{fmt.Errorf("refused: %w", ErrFinal)}, peer: true}
		later := &fakeSource{data: data}
		_, err := readAll(t, m, d, []Source{first, later})
		if !errors.Is(err, ErrFinal) || later.opens.Load() != 0 {
			t.Fatalf("err %v, later opened %d times", err, later.opens.Load())
		}
		if s, _ := first.finished.Load().(string); s == "<nil>" || s == "" {
			t.Fatalf("source not told the transfer failed: %q", s)
		}
	})
	t.Run("restart drops held bytes and opens the source again at 0", func(t *testing.T) {
		m := newManager(t)
		// A peer that dies half-way, then asks to restart, then serves.
		cut := &fakeSource{data: data, peer: true, cutAt: int64(len(data) - 1)}
		again := &scriptSource{errs: []error{fmt.Errorf("parent rejected: %w", ErrRestart)}, data: data, peer: true}
		got, err := readAll(t, m, d, []Source{&chain{cut, again}})
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("err %v", err)
		}
		if cut.demoted.Load() {
			t.Fatal("a restart demoted a source")
		}
		if s, _ := again.finished.Load().(string); s != "<nil>" {
			t.Fatalf("finished with %q", s)
		}
	})
}

// chain is one untrusted source made of two: the first serves, and when it
// fails the second takes over (as a peer source moves to its next parent).
type chain struct {
	a *fakeSource
	b *scriptSource
}

func (c *chain) Kind() string  { return "peer" }
func (c *chain) Trusted() bool { return false }
func (c *chain) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	if c.a.opens.Load() == 0 {
		return c.a.Open(ctx, off)
	}
	return c.b.Open(ctx, off)
}
func (c *chain) Finished(err error) { c.b.Finished(err) }

// A peer that declares a wrong size and closes early must not wedge the
// transfer: the upstream's true size resets the held bytes, the liar is
// demoted, and the blob arrives.
func TestLiedSizeThenEarlyClose(t *testing.T) {
	data, d := blob(t, 4096)
	m := newManager(t)
	liar := &fakeSource{data: data, peer: true, declare: 8192, cutAt: 100}
	got, err := readAll(t, m, d, []Source{liar, &fakeSource{data: data}})
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("err %v, %d bytes", err, len(got))
	}
	if !liar.demoted.Load() {
		t.Fatal("the liar was not demoted")
	}
}
