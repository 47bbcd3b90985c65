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

// pullEach pulls ref on every node at once and returns each node's time.
func (e *env) pullEach(nodes []*node, ref string) []float64 {
	times := make([]float64, len(nodes))
	var wg sync.WaitGroup
	for i, n := range nodes {
		wg.Go(func() { times[i] = e.pullTime(n, ref).Seconds() })
	}
	wg.Wait()
	return times
}

// coldHerd: 8 nodes pull an image nobody has, at once, by tag, through the
// 50 MB/s link: the swarm should send about one copy up the link and finish
// about when one direct pull through the same link does.
func coldHerd(e *env) Result {
	layers, layerSize, rounds := 4, int64(32<<20), 2
	if e.quick {
		layerSize, rounds = 4<<20, 1
	}
	nodes := e.cluster(8)
	straight := e.directNode()
	var ratios, slowest, directs, floors []float64
	detail := map[string]float64{}
	var size int64
	for round := range rounds {
		img := e.seed(layers, layerSize)
		size = 0
		for _, b := range img.Blobs() {
			size += b.Size
		}
		ref := img.RefIn(slowHost)
		// The yardstick: one containerd pulling it alone through the link.
		directs = append(directs, e.pullTime(straight, ref).Seconds())
		e.forget(straight, img)
		before := e.slow.BytesDown()
		times := e.pullEach(nodes, ref)
		ratios = append(ratios, float64(e.slow.BytesDown()-before)/float64(size))
		slowest = append(slowest, quantile(times, 1))
		for i, t := range times {
			detail[fmt.Sprintf("round%d_node%d_s", round+1, i+1)] = t
		}
		// The machine's floor: the same 8 nodes pulling it at once from a
		// peer, no upstream involved (8 containerds unpacking on this
		// machine's CPUs).
		for _, n := range nodes[1:] {
			e.forget(n, img)
		}
		floors = append(floors, quantile(e.pullEach(nodes[1:], img.DigestRefIn(slowHost)), 1))
		e.reset()
	}
	up, slow, direct, floor := median(ratios), median(slowest), median(directs), median(floors)
	met := up <= 1.1 && slow <= 1.5*direct
	detail["upstream_x_image"] = up
	detail["slowest_s"] = slow
	detail["direct_s"] = direct
	detail["floor_slowest_s"] = floor
	detail["slowest_vs_direct"] = slow / direct
	detail["floor_vs_direct"] = floor / direct
	detail["image_mib"] = float64(size) / (1 << 20)
	detail["nodes"] = 8
	detail["rounds"] = float64(rounds)
	r := Result{
		Unit: "x image", Value: up, Baseline: 1, Ratio: up,
		Goal: "upstream bytes <= 1.1x the image and the slowest pull <= 1.5x one direct pull through the link", Met: met,
		Detail: detail,
		Method: fmt.Sprintf("8 nodes crictl pull a fresh %d MiB, %d-layer image by tag at the same moment through the %d MB/s link; "+
			"value is the bytes that crossed the link divided by the image size; the slowest node's pull is compared with one "+
			"containerd pulling the same image alone through the same link (measured first, each round); the floor is the same nodes "+
			"but one pulling it at once from a peer afterwards; medians of %d rounds", size>>20, layers, slowRate/1_000_000, rounds),
	}
	if !met {
		r.Limits = fmt.Sprintf("the slowest pull took %.2fx a direct one; 8 nodes pulling it from a peer with no upstream at all take %.2fx "+
			"on this machine (%d CPUs for 8 containerds, 8 Shoals and their hashing), so that is the floor here. A follower also "+
			"cannot give containerd a byte before the whole blob has crossed the link and verified (the trust rule), so its pull "+
			"is at least the link's time for the blob followed by that floor's work: about %.2fx direct here",
			slow/direct, floor/direct, runtime.NumCPU(), (direct+floor)/direct)
	}
	return r
}
