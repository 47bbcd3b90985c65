package main

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"time"
)

// coldPull: a CRI pull of an image nobody in the cluster has, so its bytes
// come from the upstream through Shoal, against a containerd pulling the same
// image straight from the registry; unthrottled and through the 50 MB/s link.
// Interleaved round by round; each round is a fresh image.
func coldPull(e *env) Result {
	layers, layerSize, rounds := 4, int64(64<<20), 5
	if e.quick {
		layerSize, rounds = 8<<20, 2
	}
	nd := e.cluster(2)[0]
	straight := e.directNode()
	measure := func(host string) (shoal, direct []float64) {
		for i := range rounds {
			img := e.seed(layers, layerSize)
			ref := img.RefIn(host)
			if i%2 == 0 {
				direct = append(direct, e.pullTime(straight, ref).Seconds())
				shoal = append(shoal, e.pullTime(nd, ref).Seconds())
			} else {
				shoal = append(shoal, e.pullTime(nd, ref).Seconds())
				direct = append(direct, e.pullTime(straight, ref).Seconds())
			}
			e.forget(nd, img)
			e.forget(straight, img)
		}
		return shoal, direct
	}
	fast, fastDirect := measure(registryHost)
	slow, slowDirect := measure(slowHost)
	f, fd := median(fast), median(fastDirect)
	s, sd := median(slow), median(slowDirect)
	worst := max(f/fd, s/sd)
	return Result{
		Unit: "s", Value: f, Baseline: fd, Ratio: worst, Goal: "shoal / direct <= 1.05, unthrottled and through 50 MB/s",
		Met: worst <= 1.05,
		Detail: map[string]float64{"image_mib": float64(int64(layers)*layerSize) / (1 << 20), "layers": float64(layers),
			"rounds": float64(rounds), "fast_ratio": f / fd, "fast_shoal_s": f, "fast_direct_s": fd,
			"slow_ratio": s / sd, "slow_shoal_s": s, "slow_direct_s": sd,
			"fast_shoal_max_s": quantile(fast, 1), "fast_direct_max_s": quantile(fastDirect, 1)},
		Method: fmt.Sprintf("crictl pull of a fresh %d MiB, %d-layer image (random, incompressible) that no node has, by node 1 of a "+
			"2-node cluster through Shoal (bytes from the upstream), against a containerd pulling the same image straight from "+
			"distribution 2.8; %d interleaved rounds on loopback, then %d through the %d MB/s link; medians; the ratio is the worse of the two",
			int64(layers)*layerSize>>20, layers, rounds, rounds, slowRate/1_000_000),
	}
}

// coldBlob: throughput of one cold blob through Shoal's upstream path, a
// plain GET, against a GET straight from the registry and against the bound:
// one SHA-256 pass over as many bytes in memory. Interleaved.
func coldBlob(e *env) Result {
	size, rounds := int64(1<<30), 5
	if e.quick {
		size, rounds = 128<<20, 3
	}
	nd := e.cluster(2)[0]
	img := e.seed(1, size)
	d := img.Layers[0].Digest
	size = img.Layers[0].Size // a tar layer: a little more than asked
	viaShoal := fmt.Sprintf("%s/v2/%s/blobs/%s?ns=%s", nd.shoal.RegistryURL, img.Repo, d, registryHost)
	direct := fmt.Sprintf("%s/v2/%s/blobs/%s", e.reg.URL(), img.Repo, d)
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	mbps := func(url string) float64 {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			e.tb.Fatalf("%v", err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != size || resp.StatusCode != 200 {
			e.tb.Fatalf("GET %s: %d, %d bytes, %v", url, resp.StatusCode, n, err)
		}
		return float64(size) / 1e6 / time.Since(start).Seconds()
	}
	buf := make([]byte, 256<<10)
	rand.Read(buf)
	hashMBps := func() float64 {
		h := sha256.New()
		start := time.Now()
		for n := int64(0); n < size; n += int64(len(buf)) {
			h.Write(buf)
		}
		return float64(size) / 1e6 / time.Since(start).Seconds()
	}
	mbps(direct) // the registry's file into the page cache
	pid := nd.shoal.Proc.Pid()
	var shoal, reg, bound, cpu []float64
	for i := range rounds {
		bound = append(bound, hashMBps())
		if i%2 == 0 {
			reg = append(reg, mbps(direct))
		}
		c0 := cpuSeconds(pid)
		shoal = append(shoal, mbps(viaShoal))
		cpu = append(cpu, (cpuSeconds(pid)-c0)/(float64(size)/(1<<30)))
		if i%2 == 1 {
			reg = append(reg, mbps(direct))
		}
	}
	s, r, b := median(shoal), median(reg), median(bound)
	return Result{
		Unit: "MB/s", Value: s, Baseline: b, Ratio: s / b, Goal: "shoal >= 0.8x one SHA-256 pass in memory", Met: s/b >= 0.8,
		Detail: map[string]float64{"blob_mib": float64(size >> 20), "rounds": float64(rounds), "registry_mb_s": r,
			"sha256_mb_s": b, "shoal_cpu_s_per_gib": median(cpu), "shoal_vs_registry": s / r,
			"shoal_min": quantile(shoal, 0), "shoal_max": quantile(shoal, 1)},
		Method: fmt.Sprintf("GET of a cold %d MiB blob through a Shoal node (nobody has it, so it comes from distribution 2.8 on loopback "+
			"through a verified transfer) against a GET straight from the registry, and against one SHA-256 pass over %d MiB in this "+
			"process's memory (the bound: every byte must be hashed once); %d interleaved rounds, medians; CPU seconds of the Shoal "+
			"process per GiB from /proc", size>>20, size>>20, rounds),
	}
}
