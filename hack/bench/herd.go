package main

import (
	"fmt"
	"runtime"
	"sync"
	"time"
)

// pullAll pulls ref on every node at once and returns the slowest pull.
func (e *env) pullAll(nodes []*node, ref string) time.Duration {
	var mu sync.Mutex
	var slowest time.Duration
	var wg sync.WaitGroup
	for _, n := range nodes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := e.pullTime(n, ref)
			mu.Lock()
			slowest = max(slowest, d)
			mu.Unlock()
		}()
	}
	wg.Wait()
	return slowest
}

// rollout: 8 nodes; node 1 has the image; the other 7 pull at once, as a
// Deployment rolling out across a cluster would. Each round uses a fresh image.
func rollout(e *env) Result {
	layers, layerSize, rounds := 4, int64(64<<20), 3
	if e.quick {
		layerSize, rounds = 8<<20, 1
	}
	nodes := e.cluster(8)
	var slowest, singles []float64
	var upstream int64
	for range rounds {
		img := e.seed(layers, layerSize)
		// By digest, as a pinned Deployment does: a tag would cost each node
		// one HEAD to the upstream (tags are resolved there first, by
		// design), a few hundred bytes but not zero.
		ref := img.DigestRefIn(slowHost)
		e.pullTime(nodes[0], ref)
		singles = append(singles, e.pullTime(nodes[1], ref).Seconds()) // one peer pull alone: the yardstick
		e.forget(nodes[1], img)
		before := e.slow.BytesDown()
		slowest = append(slowest, e.pullAll(nodes[1:], ref).Seconds())
		upstream += e.slow.BytesDown() - before
		e.reset()
	}
	v, single := median(slowest), median(singles)
	ratio := v / single
	return Result{
		Unit: "s", Value: v, Baseline: single, Ratio: ratio,
		Goal: "upstream bytes = 0 and slowest <= 2x a single peer pull", Met: upstream == 0 && ratio <= 2,
		Detail: map[string]float64{"upstream_bytes": float64(upstream), "image_mib": float64(int64(layers)*layerSize) / (1 << 20),
			"nodes": 8, "rounds": float64(rounds), "slowest_max_s": quantile(slowest, 1)},
		Method: fmt.Sprintf("8 nodes; node 1 pulled a fresh %d MiB, %d-layer image; the other 7 crictl pull it by digest at the same moment "+
			"(upstream reachable through the %d MB/s link, whose bytes are counted); value is the median over %d rounds of the slowest pull, "+
			"baseline the median of one peer pull alone", int64(layers)*layerSize>>20, layers, slowRate/1_000_000, rounds),
		Limits: fmt.Sprintf("all 8 nodes, their containerds and their unpacking share this machine's %d CPUs and one disk. "+
			"A pull is mostly containerd decompressing and writing layers, so 7 pulls at once cannot take less than about "+
			"7/%d = %.1f times one pull here, whatever serves the bytes; a real cluster spreads them over 7 machines. "+
			"Pulled by tag instead, each node also asks the upstream where the tag points (one HEAD, a few hundred bytes)",
			runtime.NumCPU(), runtime.NumCPU(), 7/float64(runtime.NumCPU())),
	}
}

// coldHerd: 8 nodes pull an image nobody has, at once, through the 50 MB/s
// link. Every node going upstream is 8x the image; that is today's Shoal too,
// because a transfer in flight is not advertised yet.
func coldHerd(e *env) Result {
	layers, layerSize, rounds := 4, int64(64<<20), 2
	if e.quick {
		layerSize, rounds = 8<<20, 1
	}
	nodes := e.cluster(8)
	var ratios, walls []float64
	var size int64
	for range rounds {
		img := e.seed(layers, layerSize)
		size = 0
		for _, b := range img.Blobs() {
			size += b.Size
		}
		before := e.slow.BytesDown()
		start := time.Now()
		e.pullAll(nodes, img.RefIn(slowHost))
		walls = append(walls, time.Since(start).Seconds())
		ratios = append(ratios, float64(e.slow.BytesDown()-before)/float64(size))
		e.reset()
	}
	ratio := median(ratios)
	return Result{
		Unit: "x image", Value: ratio, Baseline: 8, Ratio: ratio / 8, Goal: "record (baseline 8x: every node goes upstream)", Met: true,
		Detail: map[string]float64{"wall_s": median(walls), "image_mib": float64(size) / (1 << 20), "nodes": 8, "rounds": float64(rounds)},
		Method: fmt.Sprintf("8 nodes crictl pull a fresh %d MiB, %d-layer image at the same moment through the %d MB/s link; "+
			"value is the bytes that crossed the link divided by the image size, median of %d rounds", size>>20, layers, slowRate/1_000_000, rounds),
		Limits: "a blob being fetched from the upstream is shared with local requests but not yet advertised to peers, " +
			"so nodes that miss in the DHT at the same moment each go upstream; advertising transfers in flight is the next capability",
	}
}
