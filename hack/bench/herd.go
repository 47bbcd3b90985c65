package main

import (
	"fmt"
	"runtime"
	"sync"
	"time"
)

// peerPullThrottled: the same peer pull as peer_pull, against a direct pull
// through a 50 MB/s link, which is what an internet registry gives a cluster.
func peerPullThrottled(e *env) Result {
	layers, layerSize, rounds := 4, int64(128<<20), 3
	if e.quick {
		layerSize, rounds = 16<<20, 2
	}
	nodes := e.cluster(2)
	holder, puller := nodes[0], nodes[1]
	direct := e.directNode(41)
	img := e.seed(layers, layerSize)
	ref := img.RefIn(slowHost)
	e.pullTime(holder, ref)
	var peer, straight []float64
	for range rounds {
		e.forget(puller, img)
		e.forget(direct, img)
		straight = append(straight, e.pullTime(direct, ref).Seconds())
		peer = append(peer, e.pullTime(puller, ref).Seconds())
	}
	p, d := median(peer), median(straight)
	return Result{
		Unit: "s", Value: p, Baseline: d, Ratio: d / p, Goal: "direct / peer >= 4 (peer at least 4x faster)", Met: d/p >= 4,
		Detail: map[string]float64{"image_mib": float64(int64(layers)*layerSize) / (1 << 20), "rounds": float64(rounds),
			"link_mb_s": slowRate / 1e6},
		Method: fmt.Sprintf("crictl pull of a %d MiB, %d-layer image from a peer through Shoal, against a containerd pulling it "+
			"straight from the registry through a %d MB/s throttling proxy (hack/throttle); median of %d rounds; ratio is direct/peer",
			int64(layers)*layerSize>>20, layers, slowRate/1_000_000, rounds),
	}
}

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
// Deployment rolling out across a cluster would.
func rollout(e *env) Result {
	layers, layerSize := 4, int64(64<<20)
	if e.quick {
		layerSize = 8 << 20
	}
	nodes := e.cluster(8)
	img := e.seed(layers, layerSize)
	// By digest, as a pinned Deployment does: a tag would cost each node one
	// HEAD to the upstream (tags are resolved there first, by design), a few
	// hundred bytes but not zero.
	ref := img.DigestRefIn(slowHost)
	e.pullTime(nodes[0], ref)
	single := e.pullTime(nodes[1], ref) // one peer pull alone: the yardstick
	e.forget(nodes[1], img)
	before := e.slow.BytesDown()
	slowest := e.pullAll(nodes[1:], ref)
	upstream := e.slow.BytesDown() - before
	ratio := slowest.Seconds() / single.Seconds()
	return Result{
		Unit: "s", Value: slowest.Seconds(), Baseline: single.Seconds(), Ratio: ratio,
		Goal: "upstream bytes = 0 and slowest <= 2x a single peer pull", Met: upstream == 0 && ratio <= 2,
		Detail: map[string]float64{"upstream_bytes": float64(upstream), "image_mib": float64(int64(layers)*layerSize) / (1 << 20), "nodes": 8},
		Method: fmt.Sprintf("8 nodes; node 1 pulled a %d MiB, %d-layer image; the other 7 crictl pull it by digest at the same moment "+
			"(upstream reachable through the %d MB/s link, whose bytes are counted); value is the slowest pull, baseline one peer pull alone",
			int64(layers)*layerSize>>20, layers, slowRate/1_000_000),
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
	layers, layerSize := 4, int64(64<<20)
	if e.quick {
		layerSize = 8 << 20
	}
	nodes := e.cluster(8)
	img := e.seed(layers, layerSize)
	var size int64
	for _, b := range img.Blobs() {
		size += b.Size
	}
	before := e.slow.BytesDown()
	start := time.Now()
	e.pullAll(nodes, img.RefIn(slowHost))
	wall := time.Since(start)
	ratio := float64(e.slow.BytesDown()-before) / float64(size)
	return Result{
		Unit: "x image", Value: ratio, Baseline: 8, Ratio: ratio / 8, Goal: "record (baseline 8x: every node goes upstream)", Met: true,
		Detail: map[string]float64{"wall_s": wall.Seconds(), "image_mib": float64(size) / (1 << 20), "nodes": 8},
		Method: fmt.Sprintf("8 nodes crictl pull a new %d MiB, %d-layer image at the same moment through the %d MB/s link; "+
			"value is the bytes that crossed the link divided by the image size", size>>20, layers, slowRate/1_000_000),
		Limits: "a blob being fetched from the upstream is shared with local requests but not yet advertised to peers, " +
			"so nodes that miss in the DHT at the same moment each go upstream; advertising transfers in flight is the next capability",
	}
}
