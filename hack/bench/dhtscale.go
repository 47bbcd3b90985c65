package main

import (
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/pkg/routing"
)

// dhtScale: 100 Shoal routing nodes (pkg/routing, libp2p hosts with the
// real DHT settings, in this one process, on 127.0.1.1-100), every one
// providing the same 10,000 keys and a tenth of them 10,000 keys of their
// own. Measures the provider records each node stores, the heap a record
// costs, the CPU a (re)provide round costs, and look-ups from random nodes.
func dhtScale(e *env) Result {
	nodes, shared, own := 100, 10_000, 10_000
	if e.quick {
		nodes, shared, own = 30, 2_000, 2_000
	}
	owners := nodes / 10
	secret := make([]byte, 32)
	crand.Read(secret)
	addrs := make([]string, nodes)
	for i := range addrs {
		addrs[i] = fmt.Sprintf("127.0.1.%d:5001", i+1)
	}
	list := func(context.Context) ([]string, error) { return slices.Clone(addrs), nil }
	ctx := context.Background()
	rs := make([]*routing.Router, nodes)
	for i := range rs {
		r, err := routing.New(ctx, routing.Config{
			ListenAddr: addrs[i],
			DataDir:    filepath.Join(e.dir, "dht", fmt.Sprint(i)),
			Secret:     secret,
			MirrorAddr: fmt.Sprintf("127.0.1.%d:5002", i+1),
			Bootstrap:  list,
			// Faster than the default 15 s only so the mesh forms quickly;
			// dials get 5 s, not 500 ms, because 100 nodes' handshakes share
			// two CPUs here (on a cluster each node has its own), and with
			// 500 ms a burst of them all times out and is retried together.
			BootstrapInterval: 3 * time.Second,
			DialTimeout:       5 * time.Second,
			Logger:            slog.New(slog.DiscardHandler),
		})
		if err != nil {
			e.tb.Fatalf("dht_scale: node %d: %v", i, err)
		}
		rs[i] = r
		// One node joins at a time, as a DaemonSet rolls out: 100 nodes
		// handshaking with each other at once on two CPUs time out together.
		for deadline := time.Now().Add(30 * time.Second); connected(r) < i && time.Now().Before(deadline); {
			time.Sleep(50 * time.Millisecond)
		}
	}
	defer func() {
		var wg sync.WaitGroup
		for _, r := range rs {
			wg.Go(func() { r.Close() })
		}
		wg.Wait()
	}()
	deadline := time.Now().Add(3 * time.Minute)
	for i := 0; i < nodes; {
		if connected(rs[i]) >= nodes-1 {
			i++
			continue
		}
		if time.Now().After(deadline) {
			e.tb.Logf("warning: dht_scale: node %d sees %d peers, want %d", i, connected(rs[i]), nodes-1)
			i++
			continue
		}
		time.Sleep(100 * time.Millisecond)
	}

	keyset := func(prefix string, n int) []string {
		out := make([]string, n)
		for i := range out {
			d := sha256.Sum256(fmt.Appendf(nil, "%s-%d", prefix, i))
			out[i] = "sha256:" + hex.EncodeToString(d[:])
		}
		return out
	}
	sharedKeys := keyset("shared", shared)
	ownKeys := make([][]string, owners)
	for i := range ownKeys {
		ownKeys[i] = keyset(fmt.Sprintf("own%d", i), own)
	}
	// One round: what each node does at start-up, and again every reprovide.
	// A few nodes at a time: in a cluster each node reprovides at its own
	// moment of the interval, and 100 nodes announcing at once on this
	// machine's two CPUs would measure only its overload.
	round := func() (wall time.Duration, cpu float64) {
		c0, t0 := processCPU(), time.Now()
		var wg sync.WaitGroup
		sem := make(chan struct{}, 4)
		for i, r := range rs {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				keys := sharedKeys
				if i < owners {
					keys = append(append([]string(nil), sharedKeys...), ownKeys[i]...)
				}
				if err := r.Advertise(ctx, keys...); err != nil {
					e.tb.Logf("dht_scale: node %d: %v", i, err)
				}
			})
		}
		wg.Wait()
		return time.Since(t0), processCPU() - c0
	}

	idle := 10 * time.Second
	c0 := processCPU()
	time.Sleep(idle)
	idleCPU := (processCPU() - c0) / idle.Seconds() // CPU seconds per second, all nodes, no providing
	heap0 := liveHeap()
	firstWall, firstCPU := round()
	heap1 := liveHeap()
	var records int
	minRec, maxRec := int(^uint(0)>>1), 0
	for _, r := range rs {
		n := r.StoredRecords()
		records += n
		minRec, maxRec = min(minRec, n), max(maxRec, n)
	}
	advSets := advertisedSetCost(nodes*shared + owners*own)
	bytesPerRecord := (float64(heap1) - float64(heap0) - advSets) / float64(records)
	againWall, againCPU := round()
	roundCPU := againCPU - idleCPU*againWall.Seconds()
	perHour := float64(time.Hour / defaultReprovideInterval)
	cpuPerNodeHour := roundCPU / float64(nodes) * perHour

	// Look-ups: from a random node, of a random key it does not provide
	// itself, each key once per node (no cached answers).
	lookups := 1000
	if e.quick {
		lookups = 300
	}
	// One process holds the heap of 100 nodes: its collections would pause
	// look-ups as no node's own (a hundredth of the size) would.
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var first, done []float64
	misses := 0
	seen := map[[2]int]bool{}
	for len(first)+misses < lookups {
		n := rand.IntN(nodes)
		var key string
		var k int
		if rand.IntN(2) == 0 || n < owners {
			k = rand.IntN(shared)
			key = sharedKeys[k]
		} else {
			o := rand.IntN(owners)
			k = shared + o*own + rand.IntN(own)
			key = ownKeys[o][(k-shared)%own]
		}
		if seen[[2]int{n, k}] {
			continue
		}
		seen[[2]int{n, k}] = true
		lctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		start := time.Now()
		var ft time.Duration
		for range rs[n].Lookup(lctx, key) {
			if ft == 0 {
				ft = time.Since(start)
			}
		}
		dt := time.Since(start)
		cancel()
		if ft == 0 {
			misses++
			e.tb.Logf("dht_scale: node %d found no provider of %s (key %d) in %v", n, key, k, dt)
			continue
		}
		first = append(first, ms(ft))
		done = append(done, ms(dt))
	}
	p99 := quantile(first, 0.99)
	return Result{
		Unit: "B/record", Value: bytesPerRecord,
		Goal: "≤ 100 B/record and look-up p99 < 10 ms",
		Met:  bytesPerRecord <= 100 && p99 < 10 && misses == 0,
		Detail: map[string]float64{
			"nodes": float64(nodes), "records_per_node": float64(records) / float64(nodes),
			"records_per_node_min": float64(minRec), "records_per_node_max": float64(maxRec),
			"provide_round_s": firstWall.Seconds(), "provide_round_cpu_s": firstCPU,
			"heap_delta_mib": (float64(heap1) - float64(heap0)) / (1 << 20), "advertised_sets_mib": advSets / (1 << 20),
			"reprovide_round_s": againWall.Seconds(), "reprovide_cpu_s_per_node_hour": cpuPerNodeHour,
			"lookup_first_p50_ms": quantile(first, 0.5), "lookup_first_p99_ms": p99, "lookup_misses": float64(misses),
			"lookup_done_p50_ms": quantile(done, 0.5), "lookup_done_p99_ms": quantile(done, 0.99),
		},
		Method: fmt.Sprintf("%d routing nodes (pkg/routing: libp2p, PSK, kad-dht, replication 20) in one process on 127.0.1.x, "+
			"fully meshed by bootstrap; all provide the same %d keys and %d of them %d keys of their own, 4 nodes at a time. "+
			"B/record: live heap after the first provide round minus before it, less the advertisers' own key sets "+
			"(%.1f MiB, measured on a map of the same size), over the records all nodes store (their own included). "+
			"CPU: process CPU of a second round (what a reprovide does) less idle CPU, per node, times %g rounds an hour "+
			"(reprovide every %v). Look-ups: %d from a random node for a random key (shared, or another node's own), one at a time, "+
			"with the garbage collector paused (one heap for 100 nodes); first = first provider, done = the look-up's channel closed",
			nodes, shared, owners, own, advSets/(1<<20), perHour, defaultReprovideInterval, lookups),
		Limits: "a record is 8 bytes in its key's slice (interned peer index and write time) plus its share of the key " +
			"(a 32-byte digest, a map entry and the timing wheel); keys with a single provider cost the most per record. " +
			"Look-ups walk the DHT: a few round trips between nodes that share two CPUs here",
	}
}

// defaultReprovideInterval is pkg/routing's (Config.ReprovideInterval).
const defaultReprovideInterval = 10 * time.Minute

func connected(r *routing.Router) int {
	n := 0
	for _, p := range r.Peers() {
		if p.Connected {
			n++
		}
	}
	return n
}

// processCPU is this process's user plus system CPU seconds.
func processCPU() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func liveHeap() uint64 {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// advertisedSetCost is the heap n advertised keys take in routers' own sets
// (map[[32]byte]struct{}), measured on one such map.
func advertisedSetCost(n int) float64 {
	const probe = 1_000_000 // large beside the heap's noise from 100 running nodes
	before := liveHeap()
	m := make(map[[32]byte]struct{})
	for i := range probe {
		m[sha256.Sum256(fmt.Append(nil, i))] = struct{}{}
	}
	after := liveHeap()
	runtime.KeepAlive(m)
	return max(float64(after)-float64(before), 0) / probe * float64(n)
}
