package inflight

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/shoalproject/shoal/pkg/limits"
)

func limitedManager(t *testing.T, l limits.Limits) (*Manager, *[]string) {
	t.Helper()
	var refused []string
	l.Linger = 20 * time.Millisecond
	m, err := New(Config{Dir: t.TempDir(), Limits: l, OnRefused: func(r string) { refused = append(refused, r) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(m.Close)
	return m, &refused
}

// Past MaxTransfers, a new transfer is refused at once (the chain answers a
// fast 404); joining one in flight is not a new transfer.
func TestMaxTransfers(t *testing.T) {
	m, refused := limitedManager(t, limits.Limits{MaxTransfers: 2})
	gate := make(chan struct{})
	defer close(gate)
	var readers []*Reader
	for i := range 2 {
		data, d := blob(t, 1000+i)
		r, err := m.Fetch(context.Background(), d, []Source{&sizedSource{data: data, size: int64(len(data)), gate: gate}})
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, r)
		// A second reader of the same transfer is fine.
		r2, err := m.Fetch(context.Background(), d, []Source{&fakeSource{data: data}})
		if err != nil {
			t.Fatalf("joining a transfer in flight: %v", err)
		}
		r2.Close()
	}
	data, d := blob(t, 3000)
	_, err := m.Fetch(context.Background(), d, []Source{&fakeSource{data: data}})
	var full *FullError
	if !errors.As(err, &full) || full.Reason != "transfers" || len(*refused) != 1 {
		t.Fatalf("third transfer: %v, refused %v", err, *refused)
	}
	if got := m.Stats().Transfers; got != 2 {
		t.Fatalf("Stats().Transfers = %d, want 2", got)
	}
	for _, r := range readers {
		r.Close()
	}
}

// Spooling needs room in MaxSpool; one reader streaming through memory does
// not; and the spool's bytes are counted while they exist.
func TestMaxSpool(t *testing.T) {
	data, d := blob(t, 1<<20)
	t.Run("memory needs no spool", func(t *testing.T) {
		m, _ := limitedManager(t, limits.Limits{MaxSpool: 1000})
		got, err := readAll(t, m, d, []Source{&fakeSource{data: data}})
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("err %v", err)
		}
	})
	t.Run("a shared transfer over the budget is refused", func(t *testing.T) {
		m, refused := limitedManager(t, limits.Limits{MaxSpool: 1000})
		_, err := m.Fetch(context.Background(), d, []Source{&fakeSource{data: data}}, Shared())
		var full *FullError
		if !errors.As(err, &full) || full.Reason != "spool" || len(*refused) != 1 {
			t.Fatalf("err %v, refused %v", err, *refused)
		}
	})
	t.Run("peer bytes over the budget are refused", func(t *testing.T) {
		m, _ := limitedManager(t, limits.Limits{MaxSpool: 1000})
		_, err := readAll(t, m, d, []Source{&fakeSource{data: data, peer: true}})
		if !errors.Is(err, ErrFull) {
			t.Fatalf("err %v, want ErrFull", err)
		}
	})
	t.Run("spool bytes counted, then returned", func(t *testing.T) {
		m, _ := limitedManager(t, limits.Limits{MaxSpool: 4 << 20})
		pr, pw := io.Pipe()
		go func() { pw.Write(data); pw.Close() }()
		r, err := m.Fetch(context.Background(), d, []Source{&pipeSource{r: pr, size: int64(len(data))}}, Shared())
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatal(err)
		}
		deadline := time.Now().Add(5 * time.Second)
		for m.Stats().SpoolBytes != int64(len(data)) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := m.Stats().SpoolBytes; got != int64(len(data)) {
			t.Fatalf("SpoolBytes = %d while spooled, want %d", got, len(data))
		}
		r.Close()
		for m.Stats() != (Stats{}) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if s := m.Stats(); s != (Stats{}) {
			t.Fatalf("after release: %+v", s)
		}
	})
}
