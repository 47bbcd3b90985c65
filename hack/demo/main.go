// Command demo starts a local Shoal node on 127.0.0.2 with a real containerd
// and a real registry, pulls an image through Shoal with crictl exactly as the
// kubelet would, and shows where the bytes came from. Run as root: `make demo`.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"

	"github.com/shoalproject/shoal/e2e/harness"
)

const registryHost = "registry.shoal.test" // resolves nowhere: only Shoal can serve it

func main() {
	keep := flag.Bool("keep", false, "leave everything running until Ctrl-C")
	flag.Parse()
	if err := harness.CheckRoot(); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	tb := harness.NewStandalone()
	defer tb.Close()
	harness.RequireBinaries(tb)
	dir, err := os.MkdirTemp("", "shoal-demo-")
	if err != nil {
		tb.Fatalf("%v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })

	step("building shoal")
	bin := harness.BuildShoal(tb, dir)

	step("starting the upstream registry (distribution 2.8) on 127.0.0.1 and seeding demo/hello:v1")
	reg := harness.StartRegistry(tb, dir+"/registry", "")
	img := reg.SeedRandom(tb, "demo/hello", "v1", 3, 8<<20)
	fmt.Printf("   %s  manifest %s, %d layers\n", reg.URL(), img.Digest.Encoded()[:12], len(img.Layers))

	step("starting node 1: containerd 2.4 on 127.0.0.2, `shoal configure`, `shoal run`")
	node := harness.StartContainerd(tb, dir+"/node1", harness.ContainerdOptions{IP: harness.LoopbackIP(1)})
	s := harness.StartShoal(tb, bin, dir+"/node1/shoal", node, harness.ShoalOptions{
		Upstreams: map[string]string{registryHost: reg.URL()},
	})
	fmt.Print(indent(s.Configure(tb, node)))

	ref := img.RefIn(registryHost)
	step("crictl pull " + ref)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if out, err := node.CRIPull(ctx, ref); err != nil {
		tb.Fatalf("pull failed: %v\n%s", err, out)
	}
	fmt.Printf("   pulled in %v\n", time.Since(start).Round(time.Millisecond))
	report(s)

	step("asking node 1's Shoal for a layer it now holds itself")
	layer := img.Layers[0]
	resp, err := http.Get(fmt.Sprintf("%s/v2/%s/blobs/%s?ns=%s", s.RegistryURL, img.Repo, layer.Digest, registryHost))
	if err != nil {
		tb.Fatalf("%v", err)
	}
	n, _ := io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	fmt.Printf("   %s: %d bytes\n", resp.Status, n)
	time.Sleep(100 * time.Millisecond) // the counter is updated as the handler returns
	report(s)

	fmt.Printf("\nmetrics: %s/metrics   health: %s/readyz\n", s.DebugURL, s.DebugURL)
	if *keep {
		fmt.Println("running; press Ctrl-C to stop and clean up")
		waitInterrupt()
	}
	step("cleaning up")
}

func report(s *harness.Shoal) {
	fmt.Printf("   %s bytes served by source: local=%s peer=%s upstream=%s\n", s,
		mib(s.ServedBytes("local")), mib(s.ServedBytes("peer")), mib(s.ServedBytes("upstream")))
}

func mib(b float64) string { return fmt.Sprintf("%.1f MiB", b/(1<<20)) }

func step(s string) { fmt.Printf("==> %s\n", s) }

func indent(s string) string { return "   " + s }
