package main

import (
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"
)

// miss: the time Shoal takes to answer 404 for a digest that neither the node
// nor the upstream has (local open, then an upstream round trip), against the
// same request sent straight to the upstream registry.
func miss(e *env) Result {
	n := 2000
	if e.quick {
		n = 300
	}
	client := &http.Client{}
	timeGet := func(url string) time.Duration {
		start := time.Now()
		resp, err := client.Get(url)
		if err != nil {
			e.tb.Fatalf("%v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 404 {
			e.tb.Fatalf("GET %s: %d, want 404", url, resp.StatusCode)
		}
		return time.Since(start)
	}
	var shoal, direct, local []float64
	for range n {
		d := randomDigest()
		shoal = append(shoal, ms(timeGet(fmt.Sprintf("%s/v2/bench/miss/blobs/%s?ns=%s", e.shoal.RegistryURL, d, registryHost))))
		direct = append(direct, ms(timeGet(fmt.Sprintf("%s/v2/bench/miss/blobs/%s", e.reg.URL(), d))))
		local = append(local, ms(timeGet(fmt.Sprintf("%s/v2/bench/miss/blobs/%s", e.shoal.RegistryURL, d))))
	}
	p99 := quantile(shoal, 0.99)
	return Result{
		Unit: "ms", Value: p99, Baseline: quantile(direct, 0.99), Ratio: p99 / quantile(direct, 0.99),
		Goal: "p99 < 20 ms", Met: p99 < 20,
		Detail: map[string]float64{
			"shoal_p50_ms": quantile(shoal, 0.5), "shoal_p99_ms": p99,
			"direct_p50_ms": quantile(direct, 0.5), "direct_p99_ms": quantile(direct, 0.99),
			"no_ns_p50_ms": quantile(local, 0.5), "no_ns_p99_ms": quantile(local, 0.99),
			"requests": float64(n)},
		Method: fmt.Sprintf("%d GETs of random absent digests, interleaved: through Shoal with ns (local miss, then upstream 404), "+
			"straight to the upstream (baseline), and through Shoal without ns (local miss only); keep-alive, loopback", n),
	}
}

func randomDigest() digest.Digest {
	b := make([]byte, 32)
	rand.Read(b)
	return digest.FromBytes(b)
}
