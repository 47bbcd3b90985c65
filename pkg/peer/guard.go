package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

var (
	// ErrStalled: a peer's body sent nothing for Limits.PeerStall.
	ErrStalled = errors.New("peer stalled")
	// ErrTooSlow: a peer's body ran below Limits.PeerMinRate.
	ErrTooSlow = errors.New("peer below the throughput floor")
)

// guardedBody ends a peer's body that stalls or trickles, so that the
// transfer can resume from another source instead of waiting on it. A stall
// timer alone is not enough: one byte every few seconds would reset it
// forever.
type guardedBody struct {
	body   io.ReadCloser
	cancel context.CancelFunc

	mu      sync.Mutex
	n       int64 // bytes in the current rate window
	fault   error // why the guard cut the body
	err     error // the body's last read error other than EOF
	stall   *time.Timer
	rate    *time.Ticker
	done    chan struct{}
	once    sync.Once
	stallD  time.Duration
	minRate int64
	window  time.Duration
}

func (c *Client) guard(body io.ReadCloser, cancel context.CancelFunc) *guardedBody {
	g := &guardedBody{body: body, cancel: cancel, done: make(chan struct{}),
		stallD: c.lim.PeerStall, minRate: c.lim.PeerMinRate, window: c.lim.PeerRateWindow}
	g.stall = time.AfterFunc(g.stallD, func() { g.cut(ErrStalled) })
	g.rate = time.NewTicker(g.window)
	go g.watchRate()
	return g
}

func (g *guardedBody) watchRate() {
	for {
		select {
		case <-g.done:
			return
		case <-g.rate.C:
			g.mu.Lock()
			n := g.n
			g.n = 0
			g.mu.Unlock()
			if want := int64(float64(g.minRate) * g.window.Seconds()); n < want {
				g.cut(fmt.Errorf("%w: %d bytes in %v, want %d", ErrTooSlow, n, g.window, want))
				return
			}
		}
	}
}

func (g *guardedBody) cut(err error) {
	g.mu.Lock()
	if g.fault == nil {
		g.fault = err
	}
	g.mu.Unlock()
	g.cancel()
}

// Fault is why the guard cut the body, or nil.
func (g *guardedBody) Fault() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.fault
}

func (g *guardedBody) Read(p []byte) (int, error) {
	n, err := g.body.Read(p)
	if n > 0 {
		g.stall.Reset(g.stallD)
		g.mu.Lock()
		g.n += int64(n)
		g.mu.Unlock()
	}
	if err != nil && err != io.EOF {
		if f := g.Fault(); f != nil {
			err = f
		}
		g.mu.Lock()
		g.err = err
		g.mu.Unlock()
	}
	return n, err
}

// Err is the body's last read error other than EOF, or nil.
func (g *guardedBody) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

func (g *guardedBody) Close() error {
	g.once.Do(func() {
		close(g.done)
		g.stall.Stop()
		g.rate.Stop()
	})
	err := g.body.Close()
	g.cancel()
	return err
}
