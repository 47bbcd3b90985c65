// Package throttle is a TCP proxy with one shared bandwidth limit: a stand-in
// for a cluster's link to an internet registry. Every connection through it
// draws from the same budget, as every node's pulls share one uplink. It
// counts the bytes it carries from the upstream, which is how benchmarks know
// how much really came from "the internet".
package throttle

import (
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Proxy forwards connections to Target at no more than Rate bytes/s in total.
type Proxy struct {
	ln     net.Listener
	target string
	bucket *bucket
	down   atomic.Int64 // bytes from the target to clients
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
}

// Start listens on listenAddr and forwards to target.
func Start(listenAddr, target string, rate int64) (*Proxy, error) {
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, target: target, bucket: newBucket(rate), conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is where clients connect.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// BytesDown is how many bytes the target has sent through the proxy.
func (p *Proxy) BytesDown() int64 { return p.down.Load() }

// Close stops the proxy and every connection.
func (p *Proxy) Close() error {
	err := p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn, on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if on {
		p.conns[c] = struct{}{}
	} else {
		delete(p.conns, c)
	}
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	upstream, err := net.Dial("tcp", p.target)
	if err != nil {
		client.Close()
		return
	}
	p.track(client, true)
	p.track(upstream, true)
	defer func() {
		p.track(client, false)
		p.track(upstream, false)
		client.Close()
		upstream.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { io.Copy(upstream, client); upstream.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() {
		p.copyLimited(client, upstream)
		client.(*net.TCPConn).CloseWrite()
		done <- struct{}{}
	}()
	<-done
	<-done
}

// copyLimited copies in small chunks, each paid for from the shared bucket.
func (p *Proxy) copyLimited(dst io.Writer, src io.Reader) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.bucket.take(int64(n))
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
			p.down.Add(int64(n))
		}
		if err != nil {
			return
		}
	}
}

// bucket is a token bucket refilled at rate bytes/s, holding at most 50 ms
// worth, so bursts stay short.
type bucket struct {
	mu     sync.Mutex
	rate   float64
	tokens float64
	max    float64
	last   time.Time
}

func newBucket(rate int64) *bucket {
	return &bucket{rate: float64(rate), max: float64(rate) / 20, tokens: float64(rate) / 20, last: time.Now()}
}

func (b *bucket) take(n int64) {
	b.mu.Lock()
	now := time.Now()
	b.tokens = min(b.max, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	b.last = now
	b.tokens -= float64(n)
	wait := time.Duration(0)
	if b.tokens < 0 {
		wait = time.Duration(-b.tokens / b.rate * float64(time.Second))
	}
	b.mu.Unlock()
	if wait > 0 {
		t := time.NewTimer(wait)
		<-t.C
	}
}
