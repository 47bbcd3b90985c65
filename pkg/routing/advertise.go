package routing

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	kb "github.com/libp2p/go-libp2p-kbucket"
)

// Advertise announces keys now, in parallel, and remembers them so they are
// re-announced every ReprovideInterval. A node without peers records them
// locally and announces them when it joins. A returned error means some
// announcements failed; the keys are remembered all the same and the next
// reprovide tries again.
func (r *Router) Advertise(ctx context.Context, keys ...string) error {
	r.advMu.Lock()
	for _, k := range keys {
		r.adv[k] = struct{}{}
	}
	r.advMu.Unlock()
	return r.provide(ctx, keys)
}

// Withdraw stops re-announcing keys. Records already stored at other nodes
// expire by ProviderTTL. Our own provider store cannot drop them either:
// kad-dht v0.42.2's ProviderManager has no removal and cannot be replaced (see
// dht.go), so other nodes asking us also see the record until it expires.
// Lookup never returns this node, so local look-ups are unaffected.
func (r *Router) Withdraw(_ context.Context, keys ...string) error {
	r.advMu.Lock()
	defer r.advMu.Unlock()
	for _, k := range keys {
		delete(r.adv, k)
	}
	return nil
}

// Advertised is the number of keys currently advertised.
func (r *Router) Advertised() int {
	r.advMu.Lock()
	defer r.advMu.Unlock()
	return len(r.adv)
}

func (r *Router) advertisedKeys() []string {
	r.advMu.Lock()
	defer r.advMu.Unlock()
	keys := make([]string, 0, len(r.adv))
	for k := range r.adv {
		keys = append(keys, k)
	}
	return keys
}

// provide announces keys with bounded parallelism.
func (r *Router) provide(ctx context.Context, keys []string) error {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		first  error
	)
	sem := make(chan struct{}, parallelism)
	for _, k := range keys {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.provideOne(ctx, k); err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = fmt.Errorf("%s: %w", k, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed > 0 {
		return fmt.Errorf("routing: announcing %d of %d keys failed, first: %w", failed, len(keys), first)
	}
	return nil
}

func (r *Router) provideOne(ctx context.Context, key string) error {
	ctx, cancel := context.WithTimeout(ctx, provideTimeout)
	defer cancel()
	err := r.dht.Provide(ctx, keyCID(key), true)
	if errors.Is(err, kb.ErrLookupFailure) {
		// No peers: the record is in our own store, and the reprovide on
		// joining (bootstrap.go) spreads it.
		return nil
	}
	return err
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
		if err := r.provide(r.ctx, keys); err != nil && r.ctx.Err() == nil {
			r.log.Warn("p2p: reprovide", "keys", len(keys), "err", err)
		} else {
			r.log.Debug("p2p: reprovided", "keys", len(keys), "took", time.Since(start))
		}
	}
}
