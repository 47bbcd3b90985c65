package advertiser

import (
	"context"
	"slices"
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
	tab := a.ix.keys
	a.mu.Lock()
	// A key the table does not hold is neither wanted nor known to the
	// Router: there is nothing to reconcile.
	for _, k := range keys {
		if id, ok := tab.find(k); ok {
			tab.set(id, fDirty)
		}
	}
	accepted := func(k string) bool { return tab.has(k, fAdvertised) }
	tried := func(k string) bool { return tab.has(k, fTried) }
	for {
		var mine []string
		for _, k := range keys {
			id, ok := tab.find(k)
			if !ok {
				continue
			}
			if f := tab.at(id).flags; f&fDirty == 0 || f&fBusy != 0 {
				continue // done already, or its holder will see it dirty
			}
			tab.clear(id, fDirty)
			mine = append(mine, k)
		}
		add, remove := diff(a.ix.wanted, accepted, tried, mine)
		calls := slices.Concat(add, remove)
		for _, k := range calls {
			id, _ := tab.find(k) // held, advertised or tried: in the table
			tab.set(id, fBusy)
		}
		for _, k := range mine {
			id, _ := tab.find(k)
			tab.release(id) // unless wanted, known to the Router or busy
		}
		if len(calls) == 0 {
			a.mu.Unlock()
			return
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
		// withdrawn once unwanted even though never confirmed. Busy keys
		// stay in the table, so their ids are still theirs.
		for _, k := range add {
			id, _ := tab.find(k)
			if addErr == nil {
				tab.set(id, fAdvertised)
				tab.clear(id, fTried)
			} else {
				tab.set(id, fTried)
			}
		}
		if removeErr == nil {
			for _, k := range remove {
				id, _ := tab.find(k)
				tab.clear(id, fAdvertised|fTried)
			}
		}
		for _, k := range calls {
			id, _ := tab.find(k)
			tab.clear(id, fBusy)
			tab.release(id)
		}
		if ctx.Err() == nil { // failures at shutdown are expected
			a.routerResult(len(add), addErr, len(remove), removeErr)
		}
		if addErr == nil && len(add) > 0 || removeErr == nil && len(remove) > 0 {
			a.cfg.OnChange(tab.advertised)
		}
		// Look again at the keys we held: they may have changed meanwhile.
		keys = calls
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
		a.log.Debug("keys reconciled", "advertised", nAdd, "withdrawn", nRemove, "total", a.ix.keys.advertised)
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
