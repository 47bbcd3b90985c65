package routing

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p-kad-dht/records"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/peerstore/pstoremem"
	"github.com/multiformats/go-base32"
	"github.com/multiformats/go-multihash"
)

// testClock is a settable clock for the store.
type testClock struct{ t time.Time }

func (c *testClock) now() time.Time { return c.t }

func testPeers(tb testing.TB, n int) []peer.ID {
	tb.Helper()
	out := make([]peer.ID, n)
	for i := range out {
		_, pub, err := crypto.GenerateEd25519Key(nil)
		if err != nil {
			tb.Fatal(err)
		}
		if out[i], err = peer.IDFromPublicKey(pub); err != nil {
			tb.Fatal(err)
		}
	}
	return out
}

func testMH(i int) multihash.Multihash {
	mh, _ := multihash.Sum(fmt.Appendf(nil, "key%d", i), multihash.SHA2_256, -1)
	return mh
}

func recordKey(mh []byte, p peer.ID) ds.Key {
	return ds.NewKey(provPrefix + base32.RawStdEncoding.EncodeToString(mh) + "/" + base32.RawStdEncoding.EncodeToString([]byte(p)))
}

func timeValue(t time.Time) []byte { return binary.AppendVarint(nil, t.UnixNano()) }

func queryPeers(tb testing.TB, s *provStore, mh []byte) []peer.ID {
	tb.Helper()
	res, err := s.Query(context.Background(), dsq.Query{Prefix: provPrefix + base32.RawStdEncoding.EncodeToString(mh)})
	if err != nil {
		tb.Fatal(err)
	}
	all, err := res.Rest()
	if err != nil {
		tb.Fatal(err)
	}
	var out []peer.ID
	for _, e := range all {
		_, p, ok := parseRecordKey(e.Key)
		if !ok {
			tb.Fatalf("rendered key %q does not parse", e.Key)
		}
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

func sorted(ps ...peer.ID) []peer.ID { return slices.Sorted(slices.Values(ps)) }

func TestProvStoreRoundTrip(t *testing.T) {
	ctx := context.Background()
	clk := &testClock{t: time.Now()}
	s := newProvStore(10*time.Minute, 1000, 1000)
	s.now = clk.now
	ps := testPeers(t, 3)
	k0, k1 := testMH(0), testMH(1)
	for _, p := range ps {
		if err := s.Put(ctx, recordKey(k0, p), timeValue(clk.t)); err != nil {
			t.Fatal(err)
		}
	}
	s.Put(ctx, recordKey(k1, ps[0]), timeValue(clk.t))
	s.Put(ctx, recordKey(k1, ps[0]), timeValue(clk.t)) // a refresh, not a second record
	if got := queryPeers(t, s, k0); !slices.Equal(got, sorted(ps...)) {
		t.Fatalf("k0 providers = %v, want %v", got, ps)
	}
	if got := queryPeers(t, s, k1); !slices.Equal(got, []peer.ID{ps[0]}) {
		t.Fatalf("k1 providers = %v", got)
	}
	v, err := s.Get(ctx, recordKey(k1, ps[0]))
	if err != nil {
		t.Fatal(err)
	}
	if nanos, _ := binary.Varint(v); time.Since(time.Unix(0, nanos)).Abs() > 2*time.Second {
		t.Fatalf("stored time %v, want about now", time.Unix(0, nanos))
	}
	if st := s.stats(); st.Records != 4 || st.Keys != 2 || st.Peers != 3 {
		t.Fatalf("stats = %+v, want 4 records, 2 keys, 3 peers", st)
	}
	s.Delete(ctx, recordKey(k0, ps[1]))
	if got := queryPeers(t, s, k0); !slices.Equal(got, sorted(ps[0], ps[2])) {
		t.Fatalf("after delete, k0 providers = %v", got)
	}
	if _, err := s.Get(ctx, recordKey(k0, ps[1])); err != ds.ErrNotFound {
		t.Fatalf("deleted record: Get err = %v", err)
	}
	// Keys that are not sha2-256 provider records are not kept.
	other, _ := multihash.Sum([]byte("x"), multihash.SHA2_512, -1)
	for _, k := range []ds.Key{recordKey(other, ps[0]), ds.NewKey("/providers/notbase32!/x"), ds.NewKey("/pk/abc")} {
		s.Put(ctx, k, timeValue(clk.t))
	}
	if st := s.stats(); st.Records != 3 || st.Dropped != 3 {
		t.Fatalf("stats = %+v, want 3 records and 3 dropped", st)
	}
}

func TestProvStoreExpiry(t *testing.T) {
	ctx := context.Background()
	const validity = 8 * time.Minute
	start := time.Now()
	clk := &testClock{t: start}
	s := newProvStore(validity, 1<<20, 1<<20)
	s.now = clk.now
	ps := testPeers(t, 2)
	// 100 keys from ps[0] at the start, 100 from ps[1] half-way through.
	for i := range 100 {
		s.Put(ctx, recordKey(testMH(i), ps[0]), timeValue(clk.t))
	}
	clk.t = start.Add(validity / 2)
	for i := 100; i < 200; i++ {
		s.Put(ctx, recordKey(testMH(i), ps[1]), timeValue(clk.t))
	}
	// ps[0] refreshes key 0 only: a newer time, not a second record.
	s.Put(ctx, recordKey(testMH(0), ps[0]), timeValue(clk.t))

	tests := []struct {
		at      time.Duration
		records int
		peers   int
	}{
		{validity - time.Second, 200, 2},
		// Read filters by time at once; the sweep frees memory within two
		// wheel slices.
		{validity + 2*validity/(wheelSize-2) + time.Second, 101, 2},
		{validity*3/2 + 2*validity/(wheelSize-2) + time.Second, 0, 0},
	}
	for _, tc := range tests {
		clk.t = start.Add(tc.at)
		if st := s.stats(); st.Records != tc.records || st.Peers != tc.peers {
			t.Fatalf("at %v: stats = %+v, want %d records from %d peers", tc.at, st, tc.records, tc.peers)
		}
	}
	// Reads never return an expired record, swept or not.
	clk.t = start.Add(validity + time.Second)
	s2 := newProvStore(validity, 100, 100)
	s2.now = clk.now
	s2.epoch = s.epoch
	s2.Put(ctx, recordKey(testMH(0), ps[0]), timeValue(start.Add(2*time.Second)))
	clk.t = start.Add(validity + 3*time.Second)
	if got := queryPeers(t, s2, testMH(0)); len(got) != 0 {
		t.Fatalf("expired record served: %v", got)
	}
	if _, err := s2.Get(ctx, recordKey(testMH(0), ps[0])); err != ds.ErrNotFound {
		t.Fatalf("expired record: Get err = %v", err)
	}
	// An expired record is not stored at all.
	s2.Put(ctx, recordKey(testMH(5), ps[0]), timeValue(start))
	if st := s2.stats(); st.Records != 1 {
		t.Fatalf("expired write stored: %+v", st)
	}
}

func TestProvStoreCaps(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	ps := testPeers(t, 3)
	tests := []struct {
		name        string
		max, perPer int
		writes      [3]int // keys written by each peer
		want        [3]int // records kept per peer
	}{
		{"under both caps", 100, 50, [3]int{10, 20, 30}, [3]int{10, 20, 30}},
		{"per-peer cap", 100, 15, [3]int{10, 20, 30}, [3]int{10, 15, 15}},
		{"total cap", 25, 50, [3]int{10, 20, 30}, [3]int{10, 15, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newProvStore(time.Hour, tc.max, tc.perPer)
			for pi, n := range tc.writes {
				for i := range n {
					s.Put(ctx, recordKey(testMH(i), ps[pi]), timeValue(now))
				}
			}
			var dropped int
			for pi := range ps {
				got := 0
				for i := range tc.writes[pi] {
					if _, err := s.Get(ctx, recordKey(testMH(i), ps[pi])); err == nil {
						got++
					}
				}
				if got != tc.want[pi] {
					t.Errorf("peer %d: %d records kept, want %d", pi, got, tc.want[pi])
				}
				dropped += tc.writes[pi] - tc.want[pi]
			}
			if st := s.stats(); int(st.Dropped) != dropped {
				t.Errorf("dropped = %d, want %d", st.Dropped, dropped)
			}
			// A refresh of a kept record is never refused by a cap.
			s.Put(ctx, recordKey(testMH(0), ps[0]), timeValue(now.Add(time.Second)))
			if st := s.stats(); int(st.Dropped) != dropped {
				t.Errorf("a refresh was dropped: %+v", st)
			}
		})
	}
}

// TestProvStoreChurn: keys come and go for many validity periods; memory
// (slots, peers) follows the live records.
func TestProvStoreChurn(t *testing.T) {
	ctx := context.Background()
	const validity = 10 * time.Minute
	start := time.Now()
	clk := &testClock{t: start}
	s := newProvStore(validity, 1<<20, 1<<20)
	s.now = clk.now
	ps := testPeers(t, 4)
	for round := range 30 {
		clk.t = start.Add(time.Duration(round) * validity / 3)
		for i := range 2000 {
			s.Put(ctx, recordKey(testMH(round*2000+i), ps[round%4]), timeValue(clk.t))
		}
	}
	clk.t = clk.t.Add(2 * validity)
	if st := s.stats(); st.Records != 0 || st.Keys != 0 || st.Peers != 0 {
		t.Fatalf("after every record expired: %+v", st)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.slots)-len(s.free) != 0 || len(s.slots) > 8000 {
		t.Fatalf("slots: %d, free %d: memory does not follow the live keys", len(s.slots), len(s.free))
	}
}

// TestProvStoreWithManager runs kad-dht's own ProviderManager on the store,
// as the DHT does.
func TestProvStoreWithManager(t *testing.T) {
	ctx := context.Background()
	ps := testPeers(t, 30)
	pstore, err := pstoremem.NewPeerstore()
	if err != nil {
		t.Fatal(err)
	}
	defer pstore.Close()
	s := newProvStore(time.Hour, 1<<20, 1<<20)
	pm, err := records.NewProviderManager(ps[0], pstore, s, records.CleanupInterval(0), records.ProvideValidity(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	defer pm.Close()
	// More than the manager buffers (256), so most records reach the store.
	for i := range 50 {
		for _, p := range ps {
			if err := pm.AddProvider(ctx, testMH(i), peer.AddrInfo{ID: p}); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range 50 {
		got, err := pm.GetProviders(ctx, testMH(i))
		if err != nil {
			t.Fatal(err)
		}
		ids := make([]peer.ID, 0, len(got))
		for _, ai := range got {
			ids = append(ids, ai.ID)
		}
		slices.Sort(ids)
		if !slices.Equal(ids, sorted(ps...)) {
			t.Fatalf("key %d: %d providers, want %d", i, len(ids), len(ps))
		}
	}
}

// BenchmarkProvStoreBytesPerRecord reports the heap one record costs, the
// dht_scale shape: many keys with many providers, and some with one.
func BenchmarkProvStoreBytesPerRecord(b *testing.B) {
	ps := testPeers(b, 100)
	now := time.Now()
	keyOf := func(i int) [32]byte { return sha256.Sum256(fmt.Appendf(nil, "k%d", i)) }
	for range b.N {
		s := newProvStore(time.Hour, 1<<22, 1<<22)
		before := heapInUse()
		for i := range 2000 {
			d := keyOf(i)
			for _, p := range ps {
				s.mu.Lock()
				s.addLocked(d, p, now, now)
				s.mu.Unlock()
			}
		}
		for i := range 20000 {
			s.mu.Lock()
			s.addLocked(keyOf(100000+i), ps[i%10], now, now)
			s.mu.Unlock()
		}
		after := heapInUse()
		n := s.stats().Records
		b.ReportMetric(float64(after-before)/float64(n), "B/record")
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
