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
// and at once when kicked (the node just joined the cluster).
func (r *Router) reprovideLoop() {
	for {
		iv := r.cfg.ReprovideInterval
		wait := iv - iv/10 + rand.N(iv/5+1)
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.reprovideKick:
			t.Stop()
		case <-r.ctx.Done():
			t.Stop()
			return
		}
		keys := r.advertisedKeys()
		if len(keys) == 0 {
			continue
		}
		start := time.Now()
		if err := r.announce(r.ctx, keys); err != nil && r.ctx.Err() == nil {
			r.log.Warn("p2p: reprovide", "keys", len(keys), "err", err)
		} else {
			r.log.Debug("p2p: reprovided", "keys", len(keys), "took", time.Since(start))
		}
	}
}

// StoredRecords is the number of provider records this node stores, its
// own and other nodes' (shoal_provider_records).
func (r *Router) StoredRecords() int { return r.provs.stats().Records }
