package registry

import (
	"errors"
	"sync"
	"time"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/metrics"
	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// Failures that are not plain misses. A miss is a fast 404 and containerd
// pulls elsewhere, which is right; but the same 404 also answers a spool that
// cannot be created, containerd down, an unreachable upstream, and failing
// peers, and then every pull quietly bypasses Shoal. Those are counted in
// shoal_errors_total{kind} and logged as a warning, at most once per kind per
// failureLogEvery, so that an operator sees why without a flood.

// failureLogEvery is the least time between two warnings of one kind.
const failureLogEvery = 10 * time.Second

// failureKinds names what failed behind err, in a fixed order; nothing for a
// plain miss, a policy refusal or bad input. The sources' errors wrap
// sentinels, and the chain keeps every source's error wrapped. src is where
// the bytes of an aborted response came from: a blob that failed to verify
// is its source's failure.
func failureKinds(err error, src mirror.Source) []string {
	var kinds []string
	add := func(k string) {
		for _, have := range kinds {
			if have == k {
				return
			}
		}
		kinds = append(kinds, k)
	}
	if errors.Is(err, inflight.ErrSpool) {
		add(metrics.ErrorSpool)
	}
	if errors.Is(err, store.ErrContainerd) {
		add(metrics.ErrorContainerd)
	}
	if errors.Is(err, upstream.ErrUnavailable) {
		add(metrics.ErrorUpstream)
	}
	if errors.Is(err, peer.ErrPeer) {
		add(metrics.ErrorPeer)
	}
	if errors.Is(err, inflight.ErrDigestMismatch) || errors.Is(err, inflight.ErrSizeChanged) {
		switch src {
		case mirror.SourceUpstream:
			add(metrics.ErrorUpstream)
		case mirror.SourcePeer:
			add(metrics.ErrorPeer)
		}
	}
	return kinds
}

// failureLog rate-limits the failure warning per kind and counts what it
// held back, so that the next line can say how many there were.
type failureLog struct {
	every time.Duration
	now   func() time.Time

	mu    sync.Mutex
	kinds map[string]*kindLog // one entry per kind: four at most
}

type kindLog struct {
	last       time.Time
	suppressed int
}

func newFailureLog(every time.Duration, now func() time.Time) *failureLog {
	return &failureLog{every: every, now: now, kinds: map[string]*kindLog{}}
}

// allow reports whether a warning for kind may be logged now and, if so, how
// many were suppressed since the last one.
func (f *failureLog) allow(kind string) (bool, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := f.kinds[kind]
	if k == nil {
		k = &kindLog{}
		f.kinds[kind] = k
	}
	now := f.now()
	if !k.last.IsZero() && now.Sub(k.last) < f.every {
		k.suppressed++
		return false, 0
	}
	n := k.suppressed
	k.last, k.suppressed = now, 0
	return true, n
}
