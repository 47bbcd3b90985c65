package routing

import (
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"time"

	ds "github.com/ipfs/go-datastore"
	dsq "github.com/ipfs/go-datastore/query"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-base32"
	"github.com/multiformats/go-multihash"
)

// provStore is the datastore behind the DHT's provider records, built for a
// cluster in which every node stores hundreds of thousands of them.
//
// kad-dht v0.42.2 always runs its own records.ProviderManager (a custom
// ProviderStore cannot be injected), and that manager writes each record as
// a datastore key "/providers/<base32 multihash>/<base32 peer ID>" holding a
// varint timestamp: about 130 bytes of key strings, a value slice and a map
// entry, some 500 bytes a record in a generic in-memory datastore. This store
// decodes the key on write instead: one 32-byte digest per key (Shoal's keys
// are all sha2-256), and per record an interned peer index and a write time
// in seconds, 8 bytes. Keys and values are rendered again only when queried,
// which is one key's records per look-up.
//
// Records expire by themselves: a timing wheel remembers which keys were
// written in each slice of time, and when a slice has aged past the record
// validity only the keys it lists are swept, never the whole store. The
// ProviderManager's own garbage collector (a full scan of every record) is
// therefore turned off (dht.go).
//
// Caps: at most maxRecords records, and at most maxPerPeer from any one peer
// (a member that announces millions of keys cannot crowd out the others).
// A record over a cap is dropped without an error: the manager flushes its
// writes in batches, and one failing write would fail the others with it.
// Only sha2-256 keys are kept; no Shoal node announces anything else.
type provStore struct {
	validity   time.Duration
	maxRecords int
	maxPerPeer int
	epoch      time.Time // write times are seconds since epoch
	now        func() time.Time

	mu      sync.Mutex
	keys    map[[32]byte]int32 // digest → slot in slots
	slots   []keySlot
	free    []int32 // unused slots
	peers   peerTable
	records int
	dropped uint64 // records refused by a cap or an unknown key format

	wheel [wheelSize]wheelSlice
	swept int64 // the newest wheel slice swept
}

// keySlot is one key's records. wheelMark is the newest wheel slice that
// lists this key, so a key written many times in one slice is listed once.
type keySlot struct {
	key       [32]byte
	recs      []provRec
	wheelMark int64
}

type provRec struct {
	peer uint32 // index into peerTable
	at   uint32 // write time, seconds since the store's epoch
}

// wheelSize slices of validity/(wheelSize-2) each: a record is swept at most
// two slices after it expired.
const wheelSize = 10

type wheelSlice struct {
	n    int64   // which slice of time this entry holds
	keys []int32 // slots written during it (a slot may have been reused since: harmless)
}

// peerTable interns peer IDs: records hold a 4-byte index, and an ID is held
// once however many records it has, and dropped with its last record.
type peerTable struct {
	ids   []peer.ID
	b32   []string // base32 of each ID, as the manager's keys spell it
	count []int    // live records per index
	idx   map[peer.ID]uint32
	free  []uint32
}

func newProvStore(validity time.Duration, maxRecords, maxPerPeer int) *provStore {
	now := time.Now()
	return &provStore{
		validity: validity, maxRecords: maxRecords, maxPerPeer: maxPerPeer,
		epoch: now.Add(-time.Second), now: time.Now,
		keys:  map[[32]byte]int32{},
		peers: peerTable{idx: map[peer.ID]uint32{}},
		swept: -1,
	}
}

var _ ds.Batching = (*provStore)(nil)

const provPrefix = "/providers/"

// parseRecordKey splits "/providers/<mh>/<peer>" into the digest and the peer
// ID. ok is false for any other key.
func parseRecordKey(k string) (d [32]byte, p peer.ID, ok bool) {
	rest, found := strings.CutPrefix(k, provPrefix)
	if !found {
		return d, "", false
	}
	mhs, ps, found := strings.Cut(rest, "/")
	if !found || strings.Contains(ps, "/") {
		return d, "", false
	}
	d, ok = parseKeyDigest(mhs)
	if !ok {
		return d, "", false
	}
	pb, err := base32.RawStdEncoding.DecodeString(ps)
	if err != nil {
		return d, "", false
	}
	p, err = peer.IDFromBytes(pb)
	if err != nil {
		return d, "", false
	}
	return d, p, true
}

// parseKeyDigest decodes a base32 multihash and keeps it only if it is a
// sha2-256 one.
func parseKeyDigest(s string) (d [32]byte, ok bool) {
	b, err := base32.RawStdEncoding.DecodeString(s)
	if err != nil || len(b) != 34 || b[0] != multihash.SHA2_256 || b[1] != 32 {
		return d, false
	}
	copy(d[:], b[2:])
	return d, true
}

func renderKeyPrefix(d [32]byte) string {
	var mh [34]byte
	mh[0], mh[1] = multihash.SHA2_256, 32
	copy(mh[2:], d[:])
	return provPrefix + base32.RawStdEncoding.EncodeToString(mh[:])
}

func (s *provStore) secs(t time.Time) uint32 {
	d := t.Sub(s.epoch)
	if d < 0 {
		return 0
	}
	return uint32(d / time.Second)
}

func (s *provStore) timeOf(at uint32) time.Time {
	return s.epoch.Add(time.Duration(at) * time.Second)
}

func (s *provStore) sliceLen() time.Duration { return max(s.validity/(wheelSize-2), time.Second) }

func (s *provStore) sliceOf(t time.Time) int64 { return int64(t.Sub(s.epoch) / s.sliceLen()) }

// fresh reports whether a record written at "at" is still valid at now.
func (s *provStore) fresh(at uint32, now time.Time) bool {
	return now.Sub(s.timeOf(at)) <= s.validity
}

// Put stores one record. The value is the manager's varint of the write time
// in Unix nanoseconds.
func (s *provStore) Put(_ context.Context, k ds.Key, v []byte) error {
	d, p, ok := parseRecordKey(k.String())
	nanos, n := binary.Varint(v)
	s.mu.Lock()
	defer s.mu.Unlock()
	if !ok || n <= 0 {
		s.dropped++
		return nil
	}
	now := s.now()
	s.expireLocked(now)
	s.addLocked(d, p, time.Unix(0, nanos), now)
	return nil
}

// addMany stores records of p for digests written now, under one lock: the
// provider batch protocol's path (provide.go), which skips the manager. It
// returns how many were stored (the others hit a cap).
func (s *provStore) addMany(p peer.ID, digests [][32]byte) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	s.expireLocked(now)
	before := s.dropped
	for _, d := range digests {
		s.addLocked(d, p, now, now)
	}
	return len(digests) - int(s.dropped-before)
}

func (s *provStore) addLocked(d [32]byte, p peer.ID, at, now time.Time) {
	if now.Sub(at) > s.validity {
		return // already expired
	}
	slot, have := s.keys[d]
	pi, known := s.peers.idx[p]
	if have && known {
		recs := s.slots[slot].recs
		for i := range recs {
			if recs[i].peer == pi {
				recs[i].at = s.secs(at)
				s.markLocked(slot, at)
				return
			}
		}
	}
	if s.records >= s.maxRecords || (known && s.peers.count[pi] >= s.maxPerPeer) {
		s.dropped++
		return
	}
	if !known {
		pi = s.peers.intern(p)
	}
	if !have {
		if n := len(s.free); n > 0 {
			slot = s.free[n-1]
			s.free = s.free[:n-1]
			s.slots[slot] = keySlot{key: d, wheelMark: -1}
		} else {
			slot = int32(len(s.slots))
			s.slots = append(s.slots, keySlot{key: d, wheelMark: -1})
		}
		s.keys[d] = slot
	}
	ks := &s.slots[slot]
	if ks.recs == nil {
		ks.recs = make([]provRec, 0, 1)
	}
	ks.recs = append(ks.recs, provRec{peer: pi, at: s.secs(at)})
	s.peers.count[pi]++
	s.records++
	s.markLocked(slot, at)
}

// markLocked lists slot in the wheel slice of time at.
func (s *provStore) markLocked(slot int32, at time.Time) {
	// A slice already swept must not be written again (its ring entry may
	// hold a live slice by now): such a record is listed in the next one.
	n := max(s.sliceOf(at), s.swept+1)
	ks := &s.slots[slot]
	if ks.wheelMark >= n {
		return
	}
	ks.wheelMark = n
	w := &s.wheel[n%wheelSize]
	if w.n != n {
		// The previous occupant is wheelSize slices old, long expired, and
		// was swept when time passed it (expireLocked).
		w.n, w.keys = n, w.keys[:0]
	}
	w.keys = append(w.keys, slot)
}

// expireLocked sweeps the keys of every wheel slice that has aged past the
// validity since the last call: a record written during slice n is at most
// (n+1)*sliceLen old at the end of it, so slice n is done once
// now - validity has passed its end.
func (s *provStore) expireLocked(now time.Time) {
	done := s.sliceOf(now.Add(-s.validity)) - 1 // the newest slice wholly expired
	if done <= s.swept {
		return
	}
	for i := range s.wheel {
		w := &s.wheel[i]
		if w.n <= s.swept || w.n > done {
			continue
		}
		for _, slot := range w.keys {
			s.sweepLocked(slot, now)
		}
		w.keys = nil // the slice's memory goes with it
		w.n = -1
	}
	s.swept = done
	s.maybeCompactLocked()
}

// sweepLocked drops slot's expired records, and the key with its last one.
func (s *provStore) sweepLocked(slot int32, now time.Time) {
	if int(slot) >= len(s.slots) {
		return
	}
	ks := &s.slots[slot]
	if ks.recs == nil {
		return // a free slot
	}
	kept := ks.recs[:0]
	for _, r := range ks.recs {
		if s.fresh(r.at, now) {
			kept = append(kept, r)
			continue
		}
		s.releasePeerLocked(r.peer)
	}
	ks.recs = kept
	if len(kept) == 0 {
		s.dropSlotLocked(slot)
	} else if cap(kept) > 2*len(kept)+4 {
		ks.recs = append([]provRec(nil), kept...)
	}
}

func (s *provStore) releasePeerLocked(pi uint32) {
	s.records--
	s.peers.count[pi]--
	if s.peers.count[pi] == 0 {
		s.peers.release(pi)
	}
}

func (s *provStore) dropSlotLocked(slot int32) {
	delete(s.keys, s.slots[slot].key)
	s.slots[slot] = keySlot{}
	s.free = append(s.free, slot)
}

// maybeCompactLocked shrinks the slots when most are free, so memory follows
// the live keys. It rebuilds the wheel, so never call it while sweeping.
func (s *provStore) maybeCompactLocked() {
	if len(s.free) > 1024 && len(s.free) > 3*len(s.keys) {
		s.compactLocked()
	}
}

// compactLocked renumbers the live slots densely. The wheel's slot numbers
// become stale: a stale entry only makes a sweep look at the wrong key,
// which finds nothing expired or something expired to drop, never a wrong
// result. To keep every record swept, each live key is listed again in the
// wheel slice of its newest record.
func (s *provStore) compactLocked() {
	slots := make([]keySlot, 0, len(s.keys))
	for _, ks := range s.slots {
		if ks.recs == nil {
			continue
		}
		slots = append(slots, ks)
	}
	s.slots, s.free = slots, nil
	for i := range s.wheel {
		s.wheel[i] = wheelSlice{n: -1}
	}
	for i := range s.slots {
		ks := &s.slots[i]
		s.keys[ks.key] = int32(i)
		ks.wheelMark = -1
		var newest uint32
		for _, r := range ks.recs {
			newest = max(newest, r.at)
		}
		// Every record is listed at its newest writer's slice: records
		// older than that are swept late by at most the gap, which the
		// read path hides (it filters by time).
		s.markLocked(int32(i), s.timeOf(newest))
	}
}

func (t *peerTable) intern(p peer.ID) uint32 {
	var i uint32
	if n := len(t.free); n > 0 {
		i = t.free[n-1]
		t.free = t.free[:n-1]
		t.ids[i], t.b32[i], t.count[i] = p, base32.RawStdEncoding.EncodeToString([]byte(p)), 0
	} else {
		i = uint32(len(t.ids))
		t.ids = append(t.ids, p)
		t.b32 = append(t.b32, base32.RawStdEncoding.EncodeToString([]byte(p)))
		t.count = append(t.count, 0)
	}
	t.idx[p] = i
	return i
}

func (t *peerTable) release(i uint32) {
	delete(t.idx, t.ids[i])
	t.ids[i], t.b32[i] = "", ""
	t.free = append(t.free, i)
}

// remove drops one record; it is how a withdrawn key stops being served from
// this node's own store.
func (s *provStore) remove(d [32]byte, p peer.ID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, ok := s.keys[d]
	pi, known := s.peers.idx[p]
	if !ok || !known {
		return
	}
	ks := &s.slots[slot]
	for i, r := range ks.recs {
		if r.peer == pi {
			ks.recs = append(ks.recs[:i], ks.recs[i+1:]...)
			s.releasePeerLocked(pi)
			break
		}
	}
	if len(ks.recs) == 0 {
		s.dropSlotLocked(slot)
		s.maybeCompactLocked()
	}
}

func (s *provStore) Delete(_ context.Context, k ds.Key) error {
	if d, p, ok := parseRecordKey(k.String()); ok {
		s.remove(d, p)
	}
	return nil
}

func (s *provStore) Get(_ context.Context, k ds.Key) ([]byte, error) {
	d, p, ok := parseRecordKey(k.String())
	if !ok {
		return nil, ds.ErrNotFound
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, have := s.keys[d]
	pi, known := s.peers.idx[p]
	if !have || !known {
		return nil, ds.ErrNotFound
	}
	now := s.now()
	for _, r := range s.slots[slot].recs {
		if r.peer == pi && s.fresh(r.at, now) {
			return s.value(r.at), nil
		}
	}
	return nil, ds.ErrNotFound
}

func (s *provStore) value(at uint32) []byte {
	return binary.AppendVarint(nil, s.timeOf(at).UnixNano())
}

func (s *provStore) Has(ctx context.Context, k ds.Key) (bool, error) {
	_, err := s.Get(ctx, k)
	return err == nil, nil
}

func (s *provStore) GetSize(ctx context.Context, k ds.Key) (int, error) {
	v, err := s.Get(ctx, k)
	if err != nil {
		return -1, err
	}
	return len(v), nil
}

// Query answers the manager's one query, "/providers/<mh>" (one key's
// records), by rendering only that key's live records. Any wider prefix
// renders every live record below it: correct, and costly, and nothing in
// Shoal asks for it (the manager's full-scan GC is off).
func (s *provStore) Query(_ context.Context, q dsq.Query) (dsq.Results, error) {
	var entries []dsq.Entry
	prefix := ds.NewKey(q.Prefix).String()
	s.mu.Lock()
	now := s.now()
	emit := func(ks *keySlot) {
		base := renderKeyPrefix(ks.key) + "/"
		for _, r := range ks.recs {
			if !s.fresh(r.at, now) {
				continue
			}
			e := dsq.Entry{Key: base + s.peers.b32[r.peer], Size: -1}
			if !q.KeysOnly {
				e.Value = s.value(r.at)
				e.Size = len(e.Value)
			}
			entries = append(entries, e)
		}
	}
	if rest, ok := strings.CutPrefix(prefix, provPrefix); ok && !strings.Contains(rest, "/") {
		if d, ok := parseKeyDigest(rest); ok {
			if slot, have := s.keys[d]; have {
				emit(&s.slots[slot])
			}
		}
	} else if prefix == "/" || prefix == strings.TrimSuffix(provPrefix, "/") {
		for _, slot := range s.keys {
			emit(&s.slots[slot])
		}
	}
	s.mu.Unlock()
	// The prefix is a whole key here: the manager's queries never need
	// filtering beyond it, but orders, limits and filters are honoured.
	q.Prefix = ""
	return dsq.NaiveQueryApply(q, dsq.ResultsWithEntries(q, entries)), nil
}

func (s *provStore) Batch(context.Context) (ds.Batch, error) { return ds.NewBasicBatch(s), nil }
func (s *provStore) Sync(context.Context, ds.Key) error      { return nil }
func (s *provStore) Close() error                            { return nil }

// provStats is what the store holds, for metrics, tests and the dht_scale
// benchmark.
type provStats struct {
	Records, Keys, Peers int
	Dropped              uint64
}

func (s *provStore) stats() provStats {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	return provStats{Records: s.records, Keys: len(s.keys), Peers: len(s.peers.idx), Dropped: s.dropped}
}

// noCache is the provider manager's read cache, caching nothing. The manager
// caches whole provider sets and updates them only on its own writes, while
// provider batches (provide.go) write to provStore directly: a cached set
// would miss them. provStore answers a read with one map look-up, so the
// cache bought little.
type noCache struct{}

func (noCache) Add(_, _ any) bool              { return false }
func (noCache) Get(any) (any, bool)            { return nil, false }
func (noCache) Contains(any) bool              { return false }
func (noCache) Peek(any) (any, bool)           { return nil, false }
func (noCache) Remove(any) bool                { return false }
func (noCache) RemoveOldest() (any, any, bool) { return nil, nil, false }
func (noCache) GetOldest() (any, any, bool)    { return nil, nil, false }
func (noCache) Keys() []any                    { return nil }
func (noCache) Len() int                       { return 0 }
func (noCache) Purge()                         {}
func (noCache) Resize(int) int                 { return 0 }
