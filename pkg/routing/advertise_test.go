package routing

import (
	"context"
	"testing"
	"time"
)

func TestWithdrawExpiresAndReprovideKeepsAlive(t *testing.T) {
	const ttl = 2 * time.Second
	rs := newCluster(t, 18, 4, func(c *Config) {
		c.ProviderTTL = ttl
		c.ReprovideInterval = 500 * time.Millisecond
		c.PositiveCacheTTL = 50 * time.Millisecond
		c.NegativeCacheTTL = 50 * time.Millisecond
	})
	ctx := context.Background()
	adv := rs[2]
	if err := adv.Advertise(ctx, "sha256:keep", "sha256:drop"); err != nil {
		t.Fatal(err)
	}
	if n := adv.Advertised(); n != 2 {
		t.Fatalf("Advertised = %d, want 2", n)
	}
	for _, k := range []string{"sha256:keep", "sha256:drop"} {
		if got := lookup(t, rs[0], k); len(got) != 1 {
			t.Fatalf("%s: %+v", k, got)
		}
	}
	if err := adv.Withdraw(ctx, "sha256:drop"); err != nil {
		t.Fatal(err)
	}
	if n := adv.Advertised(); n != 1 {
		t.Fatalf("Advertised after Withdraw = %d, want 1", n)
	}
	time.Sleep(ttl + 1500*time.Millisecond)
	for _, r := range []*Router{rs[0], rs[1], rs[3]} {
		if got := lookup(t, r, "sha256:drop"); len(got) != 0 {
			t.Fatalf("withdrawn key still found past ProviderTTL: %+v", got)
		}
		if got := lookup(t, r, "sha256:keep"); len(got) != 1 || got[0].ID != adv.self {
			t.Fatalf("reprovided key lost past ProviderTTL: %+v", got)
		}
	}
}

func TestAdvertiseAloneThenJoin(t *testing.T) {
	// A node that advertises before it has peers announces on joining.
	a := newRouter(t, "127.0.0.22", nil)
	if err := a.Advertise(context.Background(), "sha256:early"); err != nil {
		t.Fatalf("Advertise without peers: %v", err)
	}
	if got := lookup(t, a, "sha256:early"); len(got) != 0 {
		t.Fatalf("a node finds itself: %+v", got)
	}
	b := newRouter(t, "127.0.0.23", func(c *Config) {
		c.Bootstrap = func(context.Context) ([]string, error) { return []string{a.listenAddr()}, nil }
	})
	waitFor(t, 5*time.Second, "b to find a's early key", func() bool {
		got := lookup(t, b, "sha256:early")
		return len(got) == 1 && got[0].ID == a.self
	})
}
