package routing

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Provider is a peer that holds a key, and where its mirror API answers.
type Provider struct {
	ID        peer.ID
	MirrorURL string // like "http://10.0.0.5:5000"
}

// Lookup streams the providers of key other than this node, each with its
// MirrorURL resolved, as they are found: the local provider store first (no
// waiting on the network when it already knows), then the network. The
// channel closes when the look-up ends or ctx is done.
//
// Concurrent look-ups of one key share one DHT query, and answers are cached
// for PositiveCacheTTL, or NegativeCacheTTL when nothing was found (dropped
// as soon as an announcement of the key reaches this node). Demoted and dead
// peers are filtered out even from cached answers.
func (r *Router) Lookup(ctx context.Context, key string) <-chan Provider {
	out := make(chan Provider)
	start := time.Now()
	c := keyCID(key)
	k := string(c.Hash())
	f, run := r.cache.join(k, start, r.excluded)
	if run && !r.spawn(func() { r.runFlight(c, k, f, start) }) {
		// Closed: finish the flight so that it can never be joined half-done.
		f.finish()
		r.cache.complete(k, f, start)
	}
	go r.follow(ctx, f, out, start)
	return out
}

// follow relays a flight's providers to one caller.
func (r *Router) follow(ctx context.Context, f *flight, out chan<- Provider, start time.Time) {
	found := false
	defer func() {
		close(out)
		if r.cfg.OnLookup != nil {
			r.cfg.OnLookup(time.Since(start), found)
		}
	}()
	if f == nil {
		return // cached miss
	}
	for i := 0; ; {
		provs, done, changed := f.since(i)
		i += len(provs)
		// Each batch goes out in a random order: look-ups answer in a stable
		// order, and taking the first provider would send every node of a
		// rollout to the same peer.
		for _, j := range rand.Perm(len(provs)) {
			p := provs[j]
			if r.excluded(p.ID) {
				continue
			}
			select {
			case out <- p:
				found = true
			case <-ctx.Done():
				return
			}
		}
		if done {
			return
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return
		}
	}
}

// runFlight is the one network look-up behind concurrent Lookups of a key.
// It runs on the router's context, not a caller's: the callers sharing it may
// give up at different times, and its answer is cached for the next ones.
func (r *Router) runFlight(c cid.Cid, key string, f *flight, start time.Time) {
	ctx, cancel := context.WithTimeout(r.ctx, lookupTimeout)
	defer func() {
		cancel()
		f.finish()
		r.cache.complete(key, f, start)
	}()
	r.queries.Add(1)

	var wg sync.WaitGroup
	sem := make(chan struct{}, parallelism)
	for ai := range r.dht.FindProvidersAsync(ctx, c, 0) {
		if ai.ID == r.self || ai.ID == "" || r.excluded(ai.ID) {
			continue
		}
		if url, ok := r.mirrors.get(ai.ID); ok {
			f.add(Provider{ID: ai.ID, MirrorURL: url})
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			continue // drain: the DHT stops sending once ctx is done
		}
		wg.Go(func() {
			defer func() { <-sem }()
			url, err := r.mirrorURL(ctx, ai.ID)
			if err != nil {
				r.log.Debug("provider without a usable mirror address", "peer", ai.ID, "err", err)
				return
			}
			f.add(Provider{ID: ai.ID, MirrorURL: url})
		})
	}
	wg.Wait()
}
