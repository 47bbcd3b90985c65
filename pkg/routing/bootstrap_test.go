package routing

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/pkg/routing/bootstrap"
)

// freePort finds a port free on every ip, so that several nodes can share
// one port number as they do in a cluster (DNS gives IPs, not ports).
func freePort(t *testing.T, ips ...string) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", ips[0]+":0")
		if err != nil {
			t.Fatal(err)
		}
		_, port, _ := net.SplitHostPort(l.Addr().String())
		ok := true
		for _, ip := range ips[1:] {
			l2, err := net.Listen("tcp", net.JoinHostPort(ip, port))
			if err != nil {
				ok = false
				break
			}
			l2.Close()
		}
		l.Close()
		if ok {
			return port
		}
	}
	t.Fatal("no common free port")
	return ""
}

func TestBootstrapLearnsPeerIDFromHostPort(t *testing.T) {
	var mu sync.Mutex
	var peerCounts []int
	var lookups []bool
	a := newRouter(t, "127.0.0.36", func(c *Config) {
		c.OnPeers = func(n int) { mu.Lock(); peerCounts = append(peerCounts, n); mu.Unlock() }
		c.OnLookup = func(_ time.Duration, found bool) { mu.Lock(); lookups = append(lookups, found); mu.Unlock() }
	})
	// The list includes the node's own address, as Kubernetes lists would.
	bAddr := "127.0.0.37:" + freePort(t, "127.0.0.37")
	b := newRouter(t, "127.0.0.37", func(c *Config) {
		c.ListenAddr = bAddr
		c.Bootstrap = bootstrap.Static([]string{a.listenAddr(), bAddr})
	})
	waitFor(t, 5*time.Second, "b to connect to a", func() bool {
		return slices.Contains(peerIDs(b), a.self.String())
	})
	if slices.Contains(peerIDs(b), b.self.String()) {
		t.Fatal("a node lists itself as a peer")
	}
	// a learns b's mirror address, validated against the connection.
	waitFor(t, 5*time.Second, "a to know b's mirror", func() bool {
		for _, p := range a.Peers() {
			if p.ID == b.self.String() && p.MirrorURL == "http://127.0.0.37:5000" && p.Connected {
				return true
			}
		}
		return false
	})
	self := a.Self()
	if self.ID != a.self.String() || len(self.Addrs) != 1 || self.Addrs[0] != "/ip4/127.0.0.36/tcp/"+portOf(a.listenAddr()) {
		t.Fatalf("Self() = %+v", self)
	}
	if !a.Ready() {
		t.Fatal("not ready")
	}

	// The metrics hooks.
	if err := b.Advertise(context.Background(), "sha256:hooks"); err != nil {
		t.Fatal(err)
	}
	lookup(t, a, "sha256:hooks")
	lookup(t, a, "sha256:absent")
	mu.Lock()
	if !slices.Equal(peerCounts, []int{1}) || !slices.Equal(lookups, []bool{true, false}) {
		t.Errorf("OnPeers saw %v, OnLookup saw %v", peerCounts, lookups)
	}
	mu.Unlock()
	b.Close()
	waitFor(t, 5*time.Second, "OnPeers(0)", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.Equal(peerCounts, []int{1, 0})
	})
}

func portOf(hostport string) string {
	_, p, _ := net.SplitHostPort(hostport)
	return p
}

func TestBootstrapDNS(t *testing.T) {
	ips := []string{"127.0.0.40", "127.0.0.41", "127.0.0.42"}
	port := freePort(t, ips...)
	var rs []*Router
	for _, ip := range ips {
		rs = append(rs, newRouter(t, ip, func(c *Config) { c.ListenAddr = net.JoinHostPort(ip, port) }))
	}
	lookups := 0
	fake := func(_ context.Context, host string) ([]string, error) {
		if host != "shoal.shoal-system.svc" {
			return nil, fmt.Errorf("unexpected name %q", host)
		}
		lookups++
		return ips, nil
	}
	d := newRouter(t, "127.0.0.43", func(c *Config) {
		c.Bootstrap = bootstrap.DNS("shoal.shoal-system.svc", port, fake)
	})
	waitFor(t, 5*time.Second, "d to connect to every DNS address", func() bool {
		got := peerIDs(d)
		for _, r := range rs {
			if !slices.Contains(got, r.self.String()) {
				return false
			}
		}
		return true
	})
}

func TestRebootstrapWhenTableEmpties(t *testing.T) {
	const ip = "127.0.0.46"
	port := freePort(t, ip)
	addr := net.JoinHostPort(ip, port)
	a := newRouter(t, ip, func(c *Config) { c.ListenAddr = addr })
	// A long poll interval: only the empty-table trigger can explain a quick
	// reconnect.
	b := newRouter(t, "127.0.0.47", func(c *Config) {
		c.Bootstrap = bootstrap.Static([]string{addr})
		c.BootstrapInterval = time.Minute
	})
	waitFor(t, 5*time.Second, "b to join a", func() bool { return slices.Contains(peerIDs(b), a.self.String()) })
	a.Close()
	waitFor(t, 5*time.Second, "b to forget a", func() bool { return len(b.Peers()) == 0 })
	// A different node (new identity) takes over the address.
	c := newRouter(t, ip, func(c *Config) { c.ListenAddr = addr })
	start := time.Now()
	waitFor(t, 10*time.Second, "b to find the new node at the old address", func() bool {
		return slices.Contains(peerIDs(b), c.self.String())
	})
	t.Logf("re-bootstrapped %s after the new node started", time.Since(start))
}

// syncBuffer is a log sink that tests read while the router writes.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestSingleNodeIsReadyAndQuiet(t *testing.T) {
	var logs syncBuffer
	var attempts atomic.Int32
	static := bootstrap.Static([]string{"127.0.0.51:1"}) // nobody there
	r := newRouter(t, "127.0.0.50", func(c *Config) {
		c.Bootstrap = func(ctx context.Context) ([]string, error) {
			attempts.Add(1)
			return static(ctx)
		}
		c.BootstrapInterval = 400 * time.Millisecond
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelInfo}))
	})
	if !r.Ready() {
		t.Fatal("a node without peers must be ready")
	}
	if err := r.Advertise(context.Background(), "sha256:x"); err != nil {
		t.Fatalf("Advertise alone: %v", err)
	}
	start := time.Now()
	if got := lookup(t, r, "sha256:y"); len(got) != 0 {
		t.Fatal(got)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Fatalf("lookup without peers took %s", d)
	}
	time.Sleep(1500 * time.Millisecond)
	if n := attempts.Load(); n < 4 {
		t.Fatalf("only %d bootstrap attempts in 1.5s", n)
	}
	out := logs.String()
	if strings.Count(out, "no peers yet") != 1 || strings.Count(out, "cannot reach bootstrap peer") != 1 {
		t.Fatalf("a lone node must say so once, at info, and warn once per address:\n%s", out)
	}
	r.Close()
	if r.Ready() {
		t.Fatal("ready after Close")
	}
}
