package main

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"time"
)

// loadAvg is the machine's 1, 5 and 15 minute load averages.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	return strings.Join(strings.Fields(string(b))[:3], " ")
}

// comparePulls pulls a fresh image through host on a peer (node 2, while node
// 1 holds it) and on a containerd that goes straight to the upstream, forgetting
// it on both between rounds and alternating who goes first. It returns the
// median pull times in seconds.
func (e *env) comparePulls(host string, layers int, layerSize int64, rounds int) (peer, direct []float64) {
	nodes := e.cluster(2)
	holder, puller := nodes[0], nodes[1]
	straight := e.directNode()
	img := e.seed(layers, layerSize)
	ref := img.RefIn(host)
	e.pullTime(holder, ref) // node 1 has it; the puller fetches from it
	for i := range rounds {
		e.forget(puller, img)
		e.forget(straight, img)
		if i%2 == 0 {
			direct = append(direct, e.pullTime(straight, ref).Seconds())
			peer = append(peer, e.pullTime(puller, ref).Seconds())
		} else {
			peer = append(peer, e.pullTime(puller, ref).Seconds())
			direct = append(direct, e.pullTime(straight, ref).Seconds())
		}
	}
	e.forget(straight, img)
	return peer, direct
}

// peerPull: a CRI pull of a multi-layer image from a peer through Shoal,
// against the same pull by a containerd that goes straight to the upstream
// registry on loopback.
func peerPull(e *env) Result {
	layers, layerSize, rounds := 4, int64(64<<20), 5
	if e.quick {
		layerSize, rounds = 16<<20, 3
	}
	peer, direct := e.comparePulls(registryHost, layers, layerSize, rounds)
	p, d := median(peer), median(direct)
	return Result{
		Unit: "s", Value: p, Baseline: d, Ratio: p / d, Goal: "peer / direct <= 1.1", Met: p/d <= 1.1,
		Detail: map[string]float64{"image_mib": float64(int64(layers)*layerSize) / (1 << 20), "layers": float64(layers),
			"rounds": float64(rounds), "peer_min_s": quantile(peer, 0), "peer_max_s": quantile(peer, 1),
			"direct_min_s": quantile(direct, 0), "direct_max_s": quantile(direct, 1)},
		Method: fmt.Sprintf("crictl pull of a %d MiB, %d-layer image (random, incompressible) by a node whose Shoal fetches it from a peer, "+
			"against a containerd pulling straight from distribution 2.8 on loopback; image and snapshots removed and GC'd before each pull; "+
			"%d interleaved rounds, median", int64(layers)*layerSize>>20, layers, rounds),
	}
}

// peerPullThrottled: the same comparison, with the upstream behind a 50 MB/s
// link, which is what an internet registry gives a cluster.
func peerPullThrottled(e *env) Result {
	layers, layerSize, rounds := 4, int64(128<<20), 3
	if e.quick {
		layerSize, rounds = 16<<20, 2
	}
	peer, direct := e.comparePulls(slowHost, layers, layerSize, rounds)
	p, d := median(peer), median(direct)
	limits := ""
	if d/p < 4 {
		limits = fmt.Sprintf("the direct pull is bound by the %d MB/s link, the peer pull by this machine's %d CPUs, which its "+
			"two nodes, their containerds and any other work share (load average %s): the busier the machine, the lower the ratio, "+
			"whatever the channel", slowRate/1_000_000, runtime.NumCPU(), loadAvg())
	}
	return Result{
		Unit: "s", Value: p, Baseline: d, Ratio: d / p, Goal: "direct / peer >= 4 (peer at least 4x faster)", Met: d/p >= 4,
		Detail: map[string]float64{"image_mib": float64(int64(layers)*layerSize) / (1 << 20), "rounds": float64(rounds),
			"link_mb_s": slowRate / 1e6},
		Method: fmt.Sprintf("crictl pull of a %d MiB, %d-layer image from a peer through Shoal, against a containerd pulling it "+
			"straight from the registry through a %d MB/s throttling proxy (hack/throttle); %d interleaved rounds, median; ratio is direct/peer",
			int64(layers)*layerSize>>20, layers, slowRate/1_000_000, rounds),
		Limits: limits,
	}
}

// advertiseDelay: from a pull completing on one node to another node serving
// that layer from it (a digest-only request, so only peers can answer).
func advertiseDelay(e *env) Result {
	rounds := 20
	if e.quick {
		rounds = 6
	}
	nodes := e.cluster(2)
	var delays []float64
	for range rounds {
		img := e.seed(1, 256<<10)
		e.pullTime(nodes[0], img.RefIn(registryHost))
		start := time.Now()
		for blobCode(nodes[1], img.Layers[0].Digest.String()) != 200 {
			if time.Since(start) > 30*time.Second {
				e.tb.Fatalf("layer never found on the peer")
			}
			time.Sleep(time.Millisecond)
		}
		delays = append(delays, ms(time.Since(start)))
	}
	p99 := quantile(delays, 0.99)
	return Result{
		Unit: "ms", Value: p99, Goal: "p99 < 50 ms", Met: p99 < 50,
		Detail: map[string]float64{"p50_ms": quantile(delays, 0.5), "p99_ms": p99, "rounds": float64(rounds)},
		Method: fmt.Sprintf("%d fresh single-layer images: crictl pull on node 1 returns, then node 2 is asked for the layer "+
			"(digest only, no ns) every millisecond until it answers 200 from node 1; containerd 2.4", rounds),
	}
}
