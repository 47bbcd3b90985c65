package advertiser

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/containerd/errdefs"
	"github.com/opencontainers/go-digest"
)

// resyncWorkers bounds the images walked at once during a resync.
const resyncWorkers = 8

// resyncLoop resyncs on every tick and whenever asked (a new subscription,
// after which events may have been missed). A tick runs the light resync
// (lightResync), unless the last full one is FullResyncInterval old; a
// subscription, or a light resync that failed, asks for a full one.
func (a *Advertiser) resyncLoop(ctx context.Context, trigger <-chan struct{}) {
	t := time.NewTicker(a.cfg.ResyncInterval)
	defer t.Stop()
	failing := false
	var lastFull time.Time
	for {
		full := false
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			full = time.Since(lastFull) >= a.cfg.FullResyncInterval || failing
		case <-trigger:
			full = true
		}
		began := time.Now()
		var n int
		var err error
		if full {
			n, err = a.resync(ctx)
			if err == nil {
				lastFull = began
			}
		} else {
			n, err = a.lightResync(ctx)
		}
		switch {
		case ctx.Err() != nil:
			return
		case err != nil && !failing:
			a.log.Warn("resync failed; keeping the keys advertised", "err", err)
			failing = true
		case err != nil:
			a.log.Debug("resync failed", "err", err)
		default:
			if failing {
				a.log.Info("resync works again")
				failing = false
			}
			a.log.Debug("resync done", "full", full, "images", n, "took", time.Since(began))
		}
	}
}

// snapshot answers a resync's presence checks from one listing of the
// content store, instead of one call per blob.
type snapshot struct {
	present map[digest.Digest]int64
	backend
}

func (s snapshot) info(_ context.Context, d digest.Digest) (int64, error) {
	size, ok := s.present[d]
	if !ok {
		return 0, fmt.Errorf("%s: %w", d, errdefs.ErrNotFound)
	}
	return size, nil
}

// resync walks every image and replaces the wanted set with what it found,
// except for names an event touched meanwhile. A failure to list aborts it
// with nothing changed: an unreachable containerd is not an empty one. Then
// every key is reconciled, which also retries failed Router calls.
func (a *Advertiser) resync(ctx context.Context) (int, error) {
	start := a.beginWalk()
	defer a.endWalk(start)
	present := map[digest.Digest]int64{}
	if err := a.src.contents(ctx, func(d digest.Digest, size int64) { present[d] = size }); err != nil {
		return 0, fmt.Errorf("list content: %w", err)
	}
	imgs, err := a.src.images(ctx)
	if err != nil {
		return 0, fmt.Errorf("list images: %w", err)
	}
	ingesting, err := a.src.ingesting(ctx)
	if err != nil {
		return 0, fmt.Errorf("list ingests: %w", err)
	}
	src := snapshot{present: present, backend: a.src}

	type result struct {
		st       found
		visited  map[digest.Digest]struct{}
		complete bool
		err      error
	}
	results := make([]result, len(imgs))
	sem := make(chan struct{}, resyncWorkers)
	var wg sync.WaitGroup
	for i, img := range imgs {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			st, r, err := a.walkImage(ctx, src, img)
			results[i] = result{st: st, visited: r.visited, complete: r.complete, err: err}
		})
	}
	wg.Wait()

	reached := map[digest.Digest]struct{}{}
	listed := make(map[string]struct{}, len(imgs))
	a.mu.Lock()
	for i, img := range imgs {
		listed[img.Name] = struct{}{}
		r := results[i]
		if r.err != nil {
			// Keep what we had for it; the next resync tries again.
			a.log.Debug("resync: image walk failed", "image", img.Name, "err", r.err)
			continue
		}
		maps.Copy(reached, r.visited)
		if a.fresh(img.Name, start) {
			a.ix.setImage(img.Name, r.st)
			a.markComplete(img.Name, r.complete)
		}
	}
	for name := range a.ix.images {
		if _, ok := listed[name]; !ok && a.fresh(name, start) {
			a.ix.deleteImage(name)
			delete(a.incomplete, name)
		}
	}
	a.ix.ageOrphans(start, func(d string) bool { _, ok := present[digest.Digest(d)]; return ok }, ingesting)
	a.pruneStamps()
	all := a.ix.keys.keys(func(*entry) bool { return true })
	a.mu.Unlock()
	a.wk.retain(reached)
	a.push(ctx, all)
	return len(imgs), nil
}

// lightResync is the periodic resync: it streams the content listing and
// checks it against the index, without listing or walking images. Blobs the
// index holds that the listing lacks were deleted without an event (garbage
// collection); the images that held them, and the images whose last walk
// found blobs missing (a pull still running, or containerd 1.6, which sends
// no content events), are walked again. Orphans age, and failed Router calls
// are retried. The image list is read again only by the full resync.
func (a *Advertiser) lightResync(ctx context.Context) (int, error) {
	start := a.beginWalk()
	defer a.endWalk(start)
	a.mu.Lock()
	gen := a.ix.beginListing()
	a.mu.Unlock()
	err := a.src.contents(ctx, func(d digest.Digest, _ int64) {
		a.mu.Lock()
		a.ix.listed(string(d), gen)
		a.mu.Unlock()
	})
	if err != nil {
		return 0, fmt.Errorf("list content: %w", err)
	}
	ingesting, err := a.src.ingesting(ctx)
	if err != nil {
		return 0, fmt.Errorf("list ingests: %w", err)
	}
	a.mu.Lock()
	gone := a.ix.unlisted(gen)
	rewalk := a.ix.holders(gone)
	var touched []string
	for _, d := range gone {
		touched = append(touched, a.ix.removeContent(d)...)
	}
	touched = append(touched, a.ix.ageOrphans(start, func(d string) bool { return a.ix.present(d, gen) }, ingesting)...)
	for name := range a.incomplete {
		rewalk = append(rewalk, name)
	}
	touched = append(touched, a.ix.keys.keys(func(e *entry) bool { return e.flags&fTried != 0 })...)
	a.pruneStamps()
	a.mu.Unlock()
	a.push(ctx, touched)
	slices.Sort(rewalk)
	rewalk = slices.Compact(rewalk)
	sem := make(chan struct{}, resyncWorkers)
	var wg sync.WaitGroup
	for _, name := range rewalk {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := a.refresh(ctx, name); err != nil {
				a.log.Debug("resync: image walk failed", "image", name, "err", err)
			}
		})
	}
	wg.Wait()
	return len(rewalk), nil
}

// markComplete records whether name's last walk found every blob; call with
// mu held.
func (a *Advertiser) markComplete(name string, complete bool) {
	if complete {
		delete(a.incomplete, name)
	} else {
		a.incomplete[name] = struct{}{}
	}
}
