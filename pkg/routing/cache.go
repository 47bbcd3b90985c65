package routing

import (
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
)

// announceGrace is how long after an ADD_PROVIDER for a key arrives that a
// look-up of that key finding nothing is not cached as negative. The DHT hook
// fires just before the record is stored, so a look-up racing it can miss the
// record; without the grace that miss would be cached for NegativeCacheTTL.
const announceGrace = time.Second

// flight is one network look-up of one key, shared by every concurrent Lookup
// of that key and, once done, kept as the positive cache entry. Providers are
// appended as found; subscribers follow with an index.
type flight struct {
	mu      sync.Mutex
	provs   []Provider
	done    bool
	changed chan struct{} // closed and replaced on every change
}

func newFlight() *flight { return &flight{changed: make(chan struct{})} }

func (f *flight) add(p Provider) {
	f.mu.Lock()
	f.provs = append(f.provs, p)
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

func (f *flight) finish() {
	f.mu.Lock()
	f.done = true
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// since returns the providers from index i on, whether the flight is done,
// and a channel closed on the next change.
func (f *flight) since(i int) ([]Provider, bool, <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []Provider
	if i < len(f.provs) {
		out = f.provs[i:len(f.provs):len(f.provs)]
	}
	return out, f.done, f.changed
}

// all reports whether pred holds for every provider found.
func (f *flight) all(pred func(peer.ID) bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, p := range f.provs {
		if !pred(p.ID) {
			return false
		}
	}
	return true
}

func (f *flight) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.provs)
}

type cacheEntry struct {
	f       *flight // nil: negative
	expires time.Time
}

// lookupCache deduplicates look-ups (singleflight) and caches their answers.
// Keys are the multihash bytes, the form both Lookup and the DHT hook have.
type lookupCache struct {
	posTTL, negTTL time.Duration

	mu        sync.Mutex
	flights   map[string]*flight
	entries   map[string]cacheEntry
	announces map[string]time.Time // ADD_PROVIDER arrivals, for announceGrace
	lastSweep time.Time
}

func newLookupCache(pos, neg time.Duration) *lookupCache {
	return &lookupCache{
		posTTL: pos, negTTL: neg,
		flights:   map[string]*flight{},
		entries:   map[string]cacheEntry{},
		announces: map[string]time.Time{},
	}
}

// join returns the flight to follow for key: a cached one, the one in
// progress, or a new one (start true: the caller must run it and call
// complete). A cached negative answer returns nil. A cached answer whose
// every provider is now useless (demoted, dead) is dropped instead of served.
func (c *lookupCache) join(key string, now time.Time, useless func(peer.ID) bool) (f *flight, start bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		if now.Before(e.expires) && (e.f == nil || !e.f.all(useless)) {
			return e.f, false
		}
		delete(c.entries, key)
	}
	if f := c.flights[key]; f != nil {
		return f, false
	}
	f = newFlight()
	c.flights[key] = f
	return f, true
}

// complete caches a finished flight that began at started.
func (c *lookupCache) complete(key string, f *flight, started time.Time) {
	n := f.count()
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.flights, key)
	defer c.sweepLocked(now)
	if n > 0 {
		c.entries[key] = cacheEntry{f: f, expires: now.Add(c.posTTL)}
		return
	}
	if t, ok := c.announces[key]; ok && t.After(started.Add(-announceGrace)) {
		return // an announcement may have raced this look-up
	}
	c.entries[key] = cacheEntry{expires: now.Add(c.negTTL)}
}

// announced drops a negative answer for key: somebody just announced it.
func (c *lookupCache) announced(key string) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok && e.f == nil {
		delete(c.entries, key)
	}
	c.announces[key] = now
	c.sweepLocked(now)
}

// stored is announced for records already in the local store, many at once
// (a provider batch, provide.go): a look-up that starts now finds them, so
// only a negative answer and a look-up in flight need to hear of it. Unlike
// announced, it remembers nothing for keys nobody is looking up, so a batch
// of 100,000 records costs no memory here.
func (c *lookupCache) stored(digests [][32]byte) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) == 0 && len(c.flights) == 0 {
		return
	}
	var mh [34]byte
	mh[0], mh[1] = multihash.SHA2_256, 32
	for _, d := range digests {
		copy(mh[2:], d[:])
		if e, ok := c.entries[string(mh[:])]; ok && e.f == nil {
			delete(c.entries, string(mh[:]))
		}
		if _, ok := c.flights[string(mh[:])]; ok {
			c.announces[string(mh[:])] = now
		}
	}
	c.sweepLocked(now)
}

// sweepLocked drops expired entries, at most once a second, so the maps stay
// bounded by what a few seconds of traffic touched.
func (c *lookupCache) sweepLocked(now time.Time) {
	if now.Sub(c.lastSweep) < time.Second {
		return
	}
	c.lastSweep = now
	for k, e := range c.entries {
		if !now.Before(e.expires) {
			delete(c.entries, k)
		}
	}
	for k, t := range c.announces {
		// Keep arrivals as long as a look-up that began within the grace
		// may still be running.
		if now.Sub(t) > announceGrace+lookupTimeout {
			delete(c.announces, k)
		}
	}
}
