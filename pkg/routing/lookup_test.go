package routing

import (
	"context"
	"fmt"
	"github.com/libp2p/go-libp2p/core/peer"
	"sync"
	"testing"
	"time"
)

func TestLookupFindsAdvertisedAndMissIsFast(t *testing.T) {
	rs := newCluster(t, 2, 4, nil)
	ctx := context.Background()
	const key = "sha256:0123456789abcdef"
	if err := rs[2].Advertise(ctx, key); err != nil {
		t.Fatal(err)
	}
	got := lookup(t, rs[1], key)
	if len(got) != 1 || got[0].ID != rs[2].self || got[0].MirrorURL != "http://127.0.0.4:5000" {
		t.Fatalf("lookup = %+v, want %s at http://127.0.0.4:5000", got, rs[2].self)
	}
	// The advertiser never finds itself.
	if got := lookup(t, rs[2], key); len(got) != 0 {
		t.Fatalf("self lookup = %+v, want none", got)
	}

	var ds []time.Duration
	for i := range 200 {
		start := time.Now()
		got := lookup(t, rs[i%4], fmt.Sprintf("sha256:absent-%d", i))
		ds = append(ds, time.Since(start))
		if len(got) != 0 {
			t.Fatalf("absent key found: %+v", got)
		}
	}
	p50, p99 := percentile(ds, 0.5), percentile(ds, 0.99)
	t.Logf("lookup miss, 4 nodes, 200 keys: p50=%s p99=%s max=%s", p50, p99, percentile(ds, 1))
	if p99 > 500*time.Millisecond {
		t.Fatalf("lookup miss p99 %s > 500ms", p99)
	}
}

func TestNegativeCacheInvalidatedByAdvertisement(t *testing.T) {
	rs := newCluster(t, 6, 4, func(c *Config) { c.NegativeCacheTTL = time.Minute })
	const key = "docker.io/library/alpine:3.20"
	if got := lookup(t, rs[0], key); len(got) != 0 {
		t.Fatalf("before advertising: %+v", got)
	}
	// Cached: the second miss must not query the network.
	q := rs[0].queries.Load()
	lookup(t, rs[0], key)
	if rs[0].queries.Load() != q {
		t.Fatal("negative answer was not cached")
	}
	start := time.Now()
	if err := rs[3].Advertise(context.Background(), key); err != nil {
		t.Fatal(err)
	}
	var got []Provider
	waitFor(t, 5*time.Second, "the new provider", func() bool {
		got = lookup(t, rs[0], key)
		return len(got) > 0
	})
	t.Logf("found %d provider(s) %s after Advertise began (negative TTL 1m)", len(got), time.Since(start))
	if got[0].ID != rs[3].self {
		t.Fatalf("got %+v", got)
	}
}

func TestConcurrentLookupsShareOneQuery(t *testing.T) {
	// Caches that outlast the test: on a loaded machine a goroutine may
	// start after the shared query has ended, and must then be answered
	// from its result, not by a second query.
	rs := newCluster(t, 10, 4, func(c *Config) {
		c.PositiveCacheTTL = time.Minute
		c.NegativeCacheTTL = time.Minute
	})
	if err := rs[3].Advertise(context.Background(), "sha256:shared"); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"sha256:shared", "sha256:nobody-has-it"} {
		before := rs[0].queries.Load()
		var wg sync.WaitGroup
		results := make([][]Provider, 50)
		start := make(chan struct{})
		for i := range 50 {
			wg.Go(func() {
				<-start
				results[i] = lookup(t, rs[0], key)
			})
		}
		close(start)
		wg.Wait()
		if n := rs[0].queries.Load() - before; n != 1 {
			t.Fatalf("%s: 50 concurrent lookups made %d DHT queries, want 1", key, n)
		}
		for i, got := range results {
			if want := key == "sha256:shared"; (len(got) == 1) != want {
				t.Fatalf("%s: lookup %d got %+v", key, i, got)
			}
		}
	}
}

func TestDemoteAndDeadPeers(t *testing.T) {
	rs := newCluster(t, 14, 4, func(c *Config) {
		c.ProviderTTL = 3 * time.Second
		c.ReprovideInterval = time.Second
		c.PositiveCacheTTL = 50 * time.Millisecond
		c.NegativeCacheTTL = 50 * time.Millisecond
	})
	ctx := context.Background()
	const key = "sha256:both"
	for _, r := range rs[2:] {
		if err := r.Advertise(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if got := lookup(t, rs[0], key); len(got) != 2 {
		t.Fatalf("want 2 providers, got %+v", got)
	}
	rs[0].Demote(rs[2].self, time.Minute, false)
	got := lookup(t, rs[0], key)
	if len(got) != 1 || got[0].ID != rs[3].self {
		t.Fatalf("after demoting %s: %+v", rs[2].self, got)
	}
	// A demotion ends.
	rs[0].Demote(rs[2].self, time.Nanosecond, false)
	rs[0].peersMu.Lock()
	rs[0].demoted[rs[2].self] = demotion{until: time.Now()}
	rs[0].peersMu.Unlock()
	time.Sleep(60 * time.Millisecond)
	if got := lookup(t, rs[0], key); len(got) != 2 {
		t.Fatalf("after the demotion ended: %+v", got)
	}

	// Kill rs[3]: everyone drops it quickly, and look-ups stop returning it.
	dead := rs[3].self
	start := time.Now()
	rs[3].Close()
	waitFor(t, 5*time.Second, "the dead peer to leave every Peers()", func() bool {
		for _, r := range rs[:3] {
			for _, p := range r.Peers() {
				if p.ID == dead.String() {
					return false
				}
			}
		}
		return true
	})
	t.Logf("dead peer forgotten by all after %s", time.Since(start))
	for _, r := range rs[:2] {
		for _, p := range lookup(t, r, key) {
			if p.ID == dead {
				t.Fatalf("lookup still returns the dead peer right after it was forgotten")
			}
		}
	}
	time.Sleep(3500 * time.Millisecond) // its records expire; rs[2]'s are reprovided
	got = lookup(t, rs[1], key)
	if len(got) != 1 || got[0].ID != rs[2].self {
		t.Fatalf("after expiry: %+v, want only %s", got, rs[2].self)
	}
}

// A peer demoted until it is back (unreachable, or a body cut short: what a
// restarting node looks like) is a provider again once it reconnects; a
// liar's demotion outlives the reconnection.
func TestDemotionLiftedWhenPeerIsBack(t *testing.T) {
	rs := newCluster(t, 14, 3, func(c *Config) {
		c.PositiveCacheTTL = 10 * time.Millisecond
		c.NegativeCacheTTL = 10 * time.Millisecond
	})
	ctx := context.Background()
	const key = "sha256:back"
	if err := rs[2].Advertise(ctx, key); err != nil {
		t.Fatal(err)
	}
	if got := lookup(t, rs[0], key); len(got) != 1 {
		t.Fatalf("want 1 provider, got %+v", got)
	}
	reconnect := func() {
		t.Helper()
		rs[0].host.Network().ClosePeer(rs[2].self)
		info := peer.AddrInfo{ID: rs[2].self, Addrs: rs[2].host.Addrs()}
		if err := rs[0].host.Connect(ctx, info); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name      string
		untilBack bool
		want      int
	}{
		{"unreachable or slow: lifted", true, 1},
		{"liar: stays", false, 0},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rs[0].Demote(rs[2].self, time.Hour, tt.untilBack)
			if got := lookup(t, rs[0], key); len(got) != 0 {
				t.Fatalf("demoted peer still returned: %+v", got)
			}
			reconnect()
			waitFor(t, 5*time.Second, "the reconnection to be seen", func() bool {
				rs[0].peersMu.Lock()
				defer rs[0].peersMu.Unlock()
				_, demoted := rs[0].demoted[rs[2].self]
				return !demoted || !tt.untilBack
			})
			// Past the look-up caches, and past the connection event for a
			// demotion that must stay.
			time.Sleep(200 * time.Millisecond)
			if got := lookup(t, rs[0], key); len(got) != tt.want {
				t.Fatalf("after reconnecting: %d providers, want %d", len(got), tt.want)
			}
			rs[0].peersMu.Lock()
			delete(rs[0].demoted, rs[2].self)
			rs[0].peersMu.Unlock()
		})
	}
	// A pardonable fault does not soften a standing liar demotion.
	rs[0].Demote(rs[2].self, time.Hour, false)
	rs[0].Demote(rs[2].self, 2*time.Hour, true)
	reconnect()
	time.Sleep(200 * time.Millisecond)
	if got := lookup(t, rs[0], key); len(got) != 0 {
		t.Fatalf("liar lifted by a later pardonable fault: %+v", got)
	}
}
