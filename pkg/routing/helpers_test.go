package routing

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/shoalproject/shoal/pkg/routing/bootstrap"
)

// tlog sends slog output to t.Log, at debug with SHOAL_TEST_DEBUG=1.
type tlog struct {
	mu sync.Mutex
	tb testing.TB
	on bool
}

func (w *tlog) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.on {
		w.tb.Log(strings.TrimSuffix(string(b), "\n"))
	}
	return len(b), nil
}

func testLogger(tb testing.TB, name string) *slog.Logger {
	lvl := slog.LevelInfo
	if os.Getenv("SHOAL_TEST_DEBUG") != "" {
		lvl = slog.LevelDebug
	}
	w := &tlog{tb: tb, on: true}
	// Stop writing once the test is over: libp2p goroutines may outlive it.
	tb.Cleanup(func() { w.mu.Lock(); w.on = false; w.mu.Unlock() })
	var out io.Writer = w
	if _, ok := tb.(*testing.B); ok {
		out = io.Discard
	}
	return slog.New(slog.NewTextHandler(out, &slog.HandlerOptions{Level: lvl})).With("node", name)
}

func newRouter(tb testing.TB, ip string, mod func(*Config)) *Router {
	tb.Helper()
	cfg := Config{
		ListenAddr: ip + ":0",
		DataDir:    tb.TempDir(),
		MirrorAddr: ip + ":5000",
		Logger:     testLogger(tb, ip),
	}
	if mod != nil {
		mod(&cfg)
	}
	r, err := New(context.Background(), cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { r.Close() })
	return r
}

// newCluster starts n routers on 127.0.0.<base>.. bootstrapped to the first
// and waits until every routing table holds every other node.
func newCluster(tb testing.TB, base, n int, mod func(*Config)) []*Router {
	tb.Helper()
	rs := []*Router{newRouter(tb, fmt.Sprintf("127.0.0.%d", base), mod)}
	first := rs[0].listenAddr()
	for i := 1; i < n; i++ {
		rs = append(rs, newRouter(tb, fmt.Sprintf("127.0.0.%d", base+i), func(c *Config) {
			if mod != nil {
				mod(c)
			}
			c.Bootstrap = bootstrap.Static([]string{first})
		}))
	}
	waitFor(tb, 15*time.Second, "full routing tables", func() bool {
		for _, r := range rs {
			if r.dht.RoutingTable().Size() < n-1 {
				return false
			}
		}
		return true
	})
	return rs
}

func waitFor(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func collect(ch <-chan Provider) []Provider {
	var out []Provider
	for p := range ch {
		out = append(out, p)
	}
	return out
}

func lookup(tb testing.TB, r *Router, key string) []Provider {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return collect(r.Lookup(ctx, key))
}

func ids(ps []Provider) []peer.ID {
	out := make([]peer.ID, 0, len(ps))
	for _, p := range ps {
		out = append(out, p.ID)
	}
	slices.Sort(out)
	return out
}

func peerIDs(r *Router) []string {
	var out []string
	for _, p := range r.Peers() {
		out = append(out, p.ID)
	}
	return out
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(float64(len(s)-1) * p)
	return s[i]
}
