package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// errNoPeer means no provider could answer.
var errNoPeer = errors.New("no peer could serve it")

// attempt is one request to one provider.
type attempt func(ctx context.Context, p Provider) (*http.Response, error)

// race asks providers one at a time, starting the next when the current one
// fails or has not answered within HedgeDelay; the first success wins and
// every other attempt is cancelled. The winner's cancel func must be called
// when its body is done with.
func (c *Client) race(ctx context.Context, provs *providerList, try attempt) (*http.Response, Provider, context.CancelFunc, error) {
	type result struct {
		resp *http.Response
		prov Provider
		err  error
	}
	results := make(chan result)
	cancels := map[string]context.CancelFunc{}
	inRace := map[string]Provider{}
	running, want := 0, true
	var hedge <-chan time.Time
	var errs []error
	finish := func() {
		for id, cancel := range cancels {
			cancel()
			// Cut short, not failed: a resume may want it.
			provs.giveBack(inRace[id])
		}
		go func(n int) { // late winners still hold bodies
			for range n {
				if r := <-results; r.err == nil {
					r.resp.Body.Close()
				}
			}
		}(running)
	}
	for {
		var more <-chan struct{}
		if want {
			// Take the change channel before looking, so that a provider
			// arriving in between still wakes us.
			changed := provs.changed()
			if p, ok := provs.pop(); ok {
				actx, cancel := context.WithCancel(ctx)
				cancels[p.ID] = cancel
				inRace[p.ID] = p
				running++
				want = false
				hedge = time.After(c.lim.HedgeDelay)
				go func() {
					resp, err := try(actx, p)
					results <- result{resp, p, err}
				}()
				continue
			}
			if provs.exhausted() {
				if running == 0 {
					finish()
					return nil, Provider{}, nil, errors.Join(append([]error{errNoPeer}, errs...)...)
				}
			} else {
				more = changed
			}
		}
		select {
		case <-more:
		case <-hedge:
			want, hedge = true, nil
		case r := <-results:
			running--
			if r.err == nil {
				win := cancels[r.prov.ID]
				delete(cancels, r.prov.ID)
				finish()
				return r.resp, r.prov, win, nil
			}
			cancels[r.prov.ID]()
			delete(cancels, r.prov.ID)
			if ctx.Err() == nil && unreachable(r.err) {
				c.blame(r.prov, Unreachable, r.err)
			}
			errs = append(errs, fmt.Errorf("peer %s: %w", r.prov.ID, r.err))
			want = true
		case <-ctx.Done():
			finish()
			return nil, Provider{}, nil, ctx.Err()
		}
	}
}

// unreachable: the peer could not be reached or answered nothing; a plain
// 404 is no fault.
func unreachable(err error) bool {
	var nerr net.Error
	return errors.As(err, &nerr) || errors.Is(err, io.ErrUnexpectedEOF)
}

// providerList buffers a look-up's providers so that a later resume can use
// the ones not tried yet. Each provider is handed out once.
type providerList struct {
	mu    sync.Mutex
	items []Provider
	seen  map[string]bool
	open  int // look-ups still running
	ch    chan struct{}
}

// collect gathers the providers of every channel into one list.
func collect(ctx context.Context, found ...<-chan Provider) *providerList {
	l := &providerList{seen: map[string]bool{}, ch: make(chan struct{}), open: len(found)}
	for _, ch := range found {
		go func() {
			defer l.update(func() { l.open-- })
			for {
				select {
				case p, ok := <-ch:
					if !ok {
						return
					}
					l.add(p)
				case <-ctx.Done():
					return
				}
			}
		}()
	}
	return l
}

// add offers a provider (once per peer ID).
func (l *providerList) add(p Provider) {
	l.update(func() {
		if !l.seen[p.ID] {
			l.seen[p.ID] = true
			l.items = append(l.items, p)
		}
	})
}

func (l *providerList) update(fn func()) {
	l.mu.Lock()
	fn()
	close(l.ch)
	l.ch = make(chan struct{})
	l.mu.Unlock()
}

// giveBack returns a provider whose attempt was cut short by another's
// success, for a later resume.
func (l *providerList) giveBack(p Provider) {
	l.update(func() { l.items = append(l.items, p) })
}

func (l *providerList) pop() (Provider, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.items) == 0 {
		return Provider{}, false
	}
	p := l.items[0]
	l.items = l.items[1:]
	return p, true
}

func (l *providerList) exhausted() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open == 0 && len(l.items) == 0
}

func (l *providerList) changed() <-chan struct{} {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ch
}
