package advertiser

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/errdefs"

	"github.com/shoalproject/shoal/pkg/oci"
)

// watch keeps a subscription to containerd's events open until ctx is done.
// Each successful (re)subscription triggers a resync: the first one is the
// initial walk, later ones catch up on what happened while it was down.
// Subscribing before walking means nothing falls between the two.
func (a *Advertiser) watch(ctx context.Context, resync chan<- struct{}, wg *sync.WaitGroup) {
	delay := a.backoffMin
	down := false
	for ctx.Err() == nil {
		sctx, cancel := context.WithCancel(ctx)
		evs, errs := a.src.subscribe(sctx)
		started := time.Now()
		var err error
		select {
		case err = <-errs: // the client reports a failed subscribe at once
			if err == nil {
				err = errors.New("event stream closed")
			}
		default:
		}
		if err == nil {
			if down {
				a.log.Info("containerd events: subscribed again; resyncing")
				down = false
			}
			kick(resync)
			err = a.consume(sctx, ctx, evs, errs, wg)
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		// One warning per outage, not one per retry.
		if !down {
			a.log.Warn("containerd events: stream failed; re-subscribing", "err", err)
			down = true
		} else {
			a.log.Debug("containerd events: subscribe failed", "err", err, "retry_in", delay)
		}
		if time.Since(started) > 10*time.Second {
			delay = a.backoffMin // it had been working: start the back-off over
		}
		if !sleep(ctx, delay) {
			return
		}
		delay = min(2*delay, a.backoffMax)
	}
}

// consume handles events until the stream ends. Handlers run on ctx, not on
// the stream's context, so work in flight survives a re-subscribe.
func (a *Advertiser) consume(sctx, ctx context.Context, evs <-chan event, errs <-chan error, wg *sync.WaitGroup) error {
	for {
		select {
		case <-sctx.Done():
			return sctx.Err()
		case err := <-errs:
			if err == nil {
				err = errors.New("event stream closed")
			}
			return err
		case ev := <-evs:
			a.handle(ctx, ev, wg)
		}
	}
}

// handle applies an event. Bookkeeping is done here, in event order; walks
// and Router calls run in their own goroutines, so one slow call delays no
// other key.
func (a *Advertiser) handle(ctx context.Context, ev event, wg *sync.WaitGroup) {
	a.log.Debug("containerd event", "topic", ev.topic, "name", ev.name, "digest", ev.digest)
	var touched []string
	a.mu.Lock()
	switch ev.topic {
	case topicImageCreate, topicImageUpdate:
		stamp := a.tick()
		a.stamps[ev.name] = stamp
		a.mu.Unlock()
		wg.Go(func() { a.follow(ctx, ev.name, stamp) })
		return
	case topicImageDelete:
		a.stamps[ev.name] = a.tick()
		touched = a.ix.deleteImage(ev.name)
		delete(a.incomplete, ev.name)
	case topicContentCreate:
		// A committed blob can be served at once: advertise it before any
		// image claims it. This is what makes the delay after a pull small.
		if _, err := oci.ParseDigest(ev.digest); err == nil {
			touched = a.ix.addOrphan(ev.digest, a.tick())
		}
	case topicContentDelete:
		a.tick()
		touched = a.ix.removeContent(ev.digest)
	}
	a.mu.Unlock()
	if len(touched) > 0 {
		wg.Go(func() { a.push(ctx, touched) })
	}
}

// follow walks an image after its event, and again after short delays while
// blobs are missing: an image record can be written before its content is
// committed. It stops when a newer event for the name takes over.
func (a *Advertiser) follow(ctx context.Context, name string, stamp uint64) {
	for _, d := range a.retryDelays {
		if !sleep(ctx, d) {
			return
		}
		a.mu.Lock()
		current := a.stamps[name] <= stamp // a pruned stamp reads as 0
		a.mu.Unlock()
		if !current {
			return
		}
		complete, err := a.refresh(ctx, name)
		if err != nil {
			a.log.Debug("image walk failed", "image", name, "err", err)
			continue
		}
		if complete {
			return
		}
	}
}

// refresh walks one image and applies the result, unless an event for the
// name came in meanwhile (that event's walk is newer).
func (a *Advertiser) refresh(ctx context.Context, name string) (complete bool, err error) {
	start := a.beginWalk()
	defer a.endWalk(start)
	img, err := a.src.image(ctx, name)
	var touched []string
	switch {
	case errdefs.IsNotFound(err):
		a.mu.Lock()
		if a.fresh(name, start) {
			touched = a.ix.deleteImage(name)
			delete(a.incomplete, name)
		}
		a.mu.Unlock()
		a.push(ctx, touched)
		return true, nil
	case err != nil:
		return false, err
	}
	st, r, err := a.walkImage(ctx, a.src, img)
	if err != nil {
		return false, err
	}
	a.mu.Lock()
	if a.fresh(name, start) {
		touched = a.ix.setImage(name, st)
		a.markComplete(name, r.complete)
	}
	a.mu.Unlock()
	a.push(ctx, touched)
	return r.complete, nil
}

// walkImage computes an image's keys: its present blobs, and its tag key
// when the root is present (a peer asking for the tag gets that root).
func (a *Advertiser) walkImage(ctx context.Context, src blobSource, img images.Image) (found, walkResult, error) {
	r, err := a.wk.walk(ctx, src, img.Target)
	if err != nil {
		return found{}, r, err
	}
	// The walk visits each digest once, so r.digests has no duplicates.
	st := found{target: img.Target.Digest.String(), size: r.size, keys: make([]string, 0, len(r.digests)+1)}
	st.keys = append(st.keys, r.digests...)
	if st.has(st.target) {
		if tag, ok := TagKeyFromImageName(img.Name); ok {
			st.keys = append(st.keys, tag)
		}
	}
	return st, r, nil
}

// kick asks for a resync without blocking; one pending request is enough.
func kick(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// sleep waits d, or returns false when ctx ends first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
