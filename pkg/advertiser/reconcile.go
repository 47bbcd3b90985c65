package advertiser

import (
	"context"
	"sync"
)

// push reconciles keys with the Router: it advertises those wanted and not
// yet advertised and withdraws those advertised and no longer wanted. It is
// level-triggered: a key whose Router call is in flight elsewhere is only
// marked dirty, and the goroutine holding it looks again when its call
// returns. So calls for one key never overlap or reorder, calls for
// different keys run in parallel, and the last state always wins.
func (a *Advertiser) push(ctx context.Context, keys []string) {
	if len(keys) == 0 {
		return
	}
	a.mu.Lock()
	for _, k := range keys {
		a.dirty[k] = struct{}{}
	}
	for {
		mine := keys[:0:0]
		for _, k := range keys {
			if _, ok := a.dirty[k]; !ok {
				continue
			}
			if _, ok := a.busy[k]; ok {
				continue // its holder will see it dirty
			}
			delete(a.dirty, k)
			mine = append(mine, k)
		}
		add, remove := diff(a.ix.wanted, a.advertised, a.tried, mine)
		if len(add)+len(remove) == 0 {
			a.mu.Unlock()
			return
		}
		for _, k := range add {
			a.busy[k] = struct{}{}
		}
		for _, k := range remove {
			a.busy[k] = struct{}{}
		}
		a.mu.Unlock()

		// Distinct keys: a slow Advertise (a DHT round) holds up no Withdraw.
		var addErr, removeErr error
		var wg sync.WaitGroup
		if len(remove) > 0 {
			wg.Go(func() { removeErr = a.cfg.Router.Withdraw(ctx, remove...) })
		}
		if len(add) > 0 {
			addErr = a.cfg.Router.Advertise(ctx, add...)
		}
		wg.Wait()

		a.mu.Lock()
		// The next resync retries failed calls (both are idempotent). Keys
		// of a failed Advertise are remembered as tried, so that they are
		// withdrawn once unwanted even though never confirmed.
		for _, k := range add {
			if addErr == nil {
				a.advertised[k] = struct{}{}
				delete(a.tried, k)
			} else {
				a.tried[k] = struct{}{}
			}
		}
		if removeErr == nil {
			for _, k := range remove {
				delete(a.advertised, k)
				delete(a.tried, k)
			}
		}
		for _, k := range add {
			delete(a.busy, k)
		}
		for _, k := range remove {
			delete(a.busy, k)
		}
		if ctx.Err() == nil { // failures at shutdown are expected
			a.routerResult(len(add), addErr, len(remove), removeErr)
		}
		if addErr == nil && len(add) > 0 || removeErr == nil && len(remove) > 0 {
			a.cfg.OnChange(len(a.advertised))
		}
		// Look again at the keys we held: they may have changed meanwhile.
		keys = append(add, remove...)
	}
}

// routerResult logs Router failures once per failing spell, not per call;
// call with mu held.
func (a *Advertiser) routerResult(nAdd int, addErr error, nRemove int, removeErr error) {
	if addErr == nil && removeErr == nil {
		if a.routerFailing {
			a.log.Info("router accepts keys again")
			a.routerFailing = false
		}
		a.log.Debug("keys reconciled", "advertised", nAdd, "withdrawn", nRemove, "total", len(a.advertised))
		return
	}
	level := a.log.Warn
	if a.routerFailing {
		level = a.log.Debug
	}
	a.routerFailing = true
	if addErr != nil {
		level("advertise failed; retrying at the next resync", "keys", nAdd, "err", addErr)
	}
	if removeErr != nil {
		level("withdraw failed; retrying at the next resync", "keys", nRemove, "err", removeErr)
	}
}
