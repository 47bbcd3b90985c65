package routing

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// BenchmarkLookupMiss measures a look-up of a key nobody has, on 4 nodes over
// loopback: the cost a DHT miss adds before Shoal goes upstream. Every key is
// new, so no cache helps. It reports p50 and p99 besides the mean.
func BenchmarkLookupMiss(b *testing.B) {
	rs := newCluster(b, 60, 4, nil)
	ctx := context.Background()
	ds := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		for range rs[i%4].Lookup(ctx, fmt.Sprintf("sha256:bench-miss-%d", i)) {
			b.Fatal("absent key found")
		}
		ds = append(ds, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(ds, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(ds, 0.99).Microseconds())/1000, "p99-ms")
}

// BenchmarkLookupHit measures finding a key another node advertised, cache
// bypassed.
func BenchmarkLookupHit(b *testing.B) {
	rs := newCluster(b, 64, 4, func(c *Config) { c.PositiveCacheTTL = time.Nanosecond })
	ctx := context.Background()
	if err := rs[3].Advertise(ctx, "sha256:bench-hit"); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for b.Loop() {
		n := 0
		for range rs[0].Lookup(ctx, "sha256:bench-hit") {
			n++
		}
		if n != 1 {
			b.Fatalf("found %d providers", n)
		}
	}
}

// BenchmarkLookupMissLoaded is BenchmarkLookupMiss with 50,000 provider
// records in every node's store, the size of a busy cluster.
func BenchmarkLookupMissLoaded(b *testing.B) {
	rs := newCluster(b, 70, 4, nil)
	ctx := context.Background()
	for _, r := range rs {
		for i := range 50000 {
			other := rs[(i+1)%4].self
			if other == r.self {
				other = rs[(i+2)%4].self
			}
			if err := r.dht.ProviderStore().AddProvider(ctx, keyCID(fmt.Sprintf("sha256:load-%d", i)).Hash(), peer.AddrInfo{ID: other}); err != nil {
				b.Fatal(err)
			}
		}
	}
	ds := make([]time.Duration, 0, 1024)
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		start := time.Now()
		for range rs[i%4].Lookup(ctx, fmt.Sprintf("sha256:bench-miss-%d", i)) {
			b.Fatal("absent key found")
		}
		ds = append(ds, time.Since(start))
	}
	b.StopTimer()
	b.ReportMetric(float64(percentile(ds, 0.5).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(percentile(ds, 0.99).Microseconds())/1000, "p99-ms")
}
