package routing

import (
	"context"
	"math/rand/v2"
	"time"
)

// Advertise announces keys now and remembers them so they are re-announced
// every ReprovideInterval. A node without peers records them locally and
// announces them when it joins. A returned error means some announcements
// failed; the keys are remembered all the same and the next reprovide tries
// again.
func (r *Router) Advertise(ctx context.Context, keys ...string) error {
	ds := make([][32]byte, len(keys))
	r.advMu.Lock()
	for i, k := range keys {
		ds[i] = keyDigest(k)
		r.adv[ds[i]] = struct{}{}
	}
	r.advMu.Unlock()
	return r.announce(ctx, ds)
}

// Withdraw stops re-announcing keys and drops this node's own records of
// them. Records already stored at other nodes expire by ProviderTTL. Lookup
// never returns this node, so local look-ups are unaffected either way.
func (r *Router) Withdraw(_ context.Context, keys ...string) error {
	r.advMu.Lock()
	defer r.advMu.Unlock()
	for _, k := range keys {
		d := keyDigest(k)
		delete(r.adv, d)
		r.provs.remove(d, r.self)
	}
	return nil
}

// Advertised is the number of keys currently advertised.
func (r *Router) Advertised() int {
	r.advMu.Lock()
	defer r.advMu.Unlock()
	return len(r.adv)
}

func (r *Router) advertisedKeys() [][32]byte {
	r.advMu.Lock()
	defer r.advMu.Unlock()
	keys := make([][32]byte, 0, len(r.adv))
	for k := range r.adv {
		keys = append(keys, k)
	}
	return keys
}

// reprovideLoop re-announces every advertised key every ReprovideInterval,
// give or take 10% so that nodes started together do not announce in step,
// and at once when kicked (the node just joined the cluster). Between
// reprovides, peers that connect get their share of the records
// (announceNew), once the connections of a burst have settled.
func (r *Router) reprovideLoop() {
	iv := r.cfg.ReprovideInterval
	next := time.NewTimer(iv - iv/10 + rand.N(iv/5+1))
	defer next.Stop()
	for {
		full := false
		select {
		case <-next.C:
			full = true
		case <-r.reprovideKick:
			full = true
		case <-r.newPeerKick:
			settle := time.NewTimer(newPeerSettle)
			select {
			case <-settle.C:
			case <-r.ctx.Done():
				settle.Stop()
				return
			}
		case <-r.ctx.Done():
			return
		}
		start := time.Now()
		if !full {
			if err := r.announceNew(r.ctx); err != nil && r.ctx.Err() == nil {
				r.log.Debug("p2p: announcing to new peers", "err", err)
			}
			continue
		}
		next.Reset(iv - iv/10 + rand.N(iv/5+1))
		n, err := r.reprovide(r.ctx)
		switch {
		case err != nil && r.ctx.Err() == nil:
			r.log.Warn("p2p: reprovide", "keys", n, "err", err)
		case n > 0:
			r.log.Debug("p2p: reprovided", "keys", n, "took", time.Since(start))
		}
	}
}

// StoredRecords is the number of provider records this node stores, its
// own and other nodes' (shoal_provider_records).
func (r *Router) StoredRecords() int { return r.provs.stats().Records }
