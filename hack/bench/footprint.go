package main

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// footprint: resident memory and CPU of one node with nothing to advertise,
// then advertising 10,000 digests, idle and through its periodic resyncs,
// and while it serves a large local blob.
func footprint(e *env) Result {
	nd := e.cluster(2)[0] // with a peer, so it really provides to the DHT
	pid := nd.shoal.Proc.Pid()
	settle := 5 * time.Second
	time.Sleep(settle)
	emptyRSS := rssMiB(pid)
	images := 3400 // 3 keys each (manifest, config, tag) plus one shared layer
	before := nd.shoal.Metric("shoal_advertised_keys", nil)
	e.importMany(nd, images)
	want := before + float64(3*images)
	deadline := time.Now().Add(5 * time.Minute)
	for nd.shoal.Metric("shoal_advertised_keys", nil) < want {
		if time.Now().After(deadline) {
			e.tb.Fatalf("advertised %v keys, want %v", nd.shoal.Metric("shoal_advertised_keys", nil), want)
		}
		time.Sleep(200 * time.Millisecond)
	}
	keys := nd.shoal.Metric("shoal_advertised_keys", nil)
	// Idle: long enough to span a resync (every minute by default), sampled
	// every 20 ms. Idle RSS is the median sample, the resync's the maximum.
	idle := 75 * time.Second
	if e.quick {
		idle = 20 * time.Second
	}
	time.Sleep(settle) // let the announcements settle
	cpu0 := cpuSeconds(pid)
	var samples []float64
	for end := time.Now().Add(idle); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		samples = append(samples, rssMiB(pid))
	}
	idleCPU := (cpuSeconds(pid) - cpu0) / idle.Minutes()
	idleRSS, resyncMax := median(samples), quantile(samples, 1)
	anon, file := statusMiB(pid, "RssAnon:"), statusMiB(pid, "RssFile:")
	heapInuse := nd.shoal.Metric("go_memstats_heap_inuse_bytes", nil) / (1 << 20)
	heapLive := nd.shoal.Metric("go_memstats_heap_alloc_bytes", nil) / (1 << 20)
	profile := e.heapProfile(nd)

	// Serving: a large local blob, fetched a few times, sampled for peak RSS.
	size := int64(256 << 20)
	if e.quick {
		size = 64 << 20
	}
	d, _ := e.ingestRandom(nd, size)
	url := fmt.Sprintf("%s/v2/bench/blobs/%s", nd.shoal.RegistryURL, d)
	stop := make(chan struct{})
	peak := make(chan float64)
	go func() {
		var p float64
		for {
			p = max(p, rssMiB(pid))
			select {
			case <-stop:
				peak <- p
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	cpu0 = cpuSeconds(pid)
	const fetches = 4
	for range fetches {
		resp, err := http.Get(url)
		if err != nil {
			e.tb.Fatalf("%v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	serveCPU := (cpuSeconds(pid) - cpu0) / (float64(fetches*size) / (1 << 30))
	close(stop)
	servePeak := <-peak
	return Result{
		Unit: "MiB", Value: idleRSS, Goal: "idle RSS < 40 MiB with 10,000 keys, max RSS through a resync < 48 MiB",
		Met: idleRSS < 40 && resyncMax < 48,
		Detail: map[string]float64{"advertised_keys": keys, "empty_rss_mib": emptyRSS, "rss_anon_mib": anon, "rss_file_mib": file,
			"heap_inuse_mib": heapInuse, "heap_live_mib": heapLive, "resync_max_rss_mib": resyncMax,
			"idle_cpu_s_per_min": idleCPU, "serve_peak_rss_mib": servePeak, "serve_cpu_s_per_gib": serveCPU},
		Method: fmt.Sprintf("a node of a 2-node cluster: VmRSS with nothing to advertise (empty_rss), then advertising %.0f keys "+
			"(%d imported images plus earlier scenarios), sampled every 20 ms for %v idle, which spans a resync: the median is "+
			"the value, the maximum resync_max_rss; RssAnon and the Go heap (in use, live) at the end, heap profile in %s; "+
			"CPU seconds per idle minute; then %d GETs of a %d MiB local blob, peak VmRSS sampled every 20 ms "+
			"and CPU seconds per GiB served", keys, images, idle, profile, fetches, size>>20),
		Limits: fmt.Sprintf("VmRSS is mostly the executable's own pages: RssFile %.0f MiB is the shoal binary mapped, "+
			"about three quarters of its text, rodata and pclntab: start-up (some 850 packages' initialisers, then the daemon's "+
			"set-up) touches code all over the binary and the kernel maps aligned 64 KiB blocks a fault (fault-around), "+
			"so 3 s after start 80%% of the text's blocks are already mapped (pagemap); it is shared, "+
			"reclaimable page cache rather than memory Shoal allocated, and it shrinks only with the binary (the "+
			"Kubernetes client, containerd's gRPC client with protobuf and OpenTelemetry, and libp2p are the biggest "+
			"parts left). What Shoal allocated is RssAnon, %.0f MiB with %.0f keys (%.0f MiB with none, %.1f MiB live heap); "+
			"the resync no longer raises it (max %.1f MiB against a median of %.1f). Below 40 MiB VmRSS needs a smaller "+
			"binary still", file, anon, keys, emptyRSS-file, heapLive, resyncMax, idleRSS),
	}
}

// heapProfile saves the node's heap profile (after a GC) for go tool pprof
// and returns where.
func (e *env) heapProfile(nd *node) string {
	resp, err := http.Get(nd.shoal.DebugURL + "/debug/pprof/heap?gc=1")
	if err != nil {
		return "(none: " + err.Error() + ")"
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Sprintf("(none: %s)", resp.Status)
	}
	path := filepath.Join(os.TempDir(), fmt.Sprintf("shoal-footprint-%d.heap", os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		return "(none: " + err.Error() + ")"
	}
	defer f.Close()
	io.Copy(f, resp.Body)
	return path
}

// importMany imports n tiny images with `ctr images import`, a thousand per
// OCI archive (ctr refuses archives of over 10,000 descriptors): a cheap way
// to give containerd thousands of digests.
func (e *env) importMany(nd *node, n int) {
	for done := 0; done < n; done += 1000 {
		e.importBatch(nd, done, min(1000, n-done))
	}
}

func (e *env) importBatch(nd *node, first, n int) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	add := func(name string, b []byte) {
		tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(b))})
		tw.Write(b)
	}
	blob := func(b []byte) ocispec.Descriptor {
		d := digest.FromBytes(b)
		add("blobs/sha256/"+d.Encoded(), b)
		return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
	}
	add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`))
	layer := blob([]byte("shoal footprint layer"))
	layer.MediaType = ocispec.MediaTypeImageLayer
	if first == 0 {
		e.seq++
	}
	var index ocispec.Index
	index.SchemaVersion = 2
	index.MediaType = ocispec.MediaTypeImageIndex
	for i := first; i < first+n; i++ {
		cfgJSON, _ := json.Marshal(ocispec.Image{Platform: ocispec.Platform{Architecture: "amd64", OS: "linux"},
			Config: ocispec.ImageConfig{Labels: map[string]string{"n": strconv.Itoa(i)}},
			RootFS: ocispec.RootFS{Type: "layers", DiffIDs: []digest.Digest{layer.Digest}}})
		cfg := blob(cfgJSON)
		cfg.MediaType = ocispec.MediaTypeImageConfig
		manJSON, _ := json.Marshal(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2},
			MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}})
		man := blob(manJSON)
		man.MediaType = ocispec.MediaTypeImageManifest
		man.Annotations = map[string]string{"io.containerd.image.name": fmt.Sprintf("%s/bench/many%d:t%d", registryHost, e.seq, i)}
		index.Manifests = append(index.Manifests, man)
	}
	idx, _ := json.Marshal(index)
	add("index.json", idx)
	tw.Close()
	path := filepath.Join(e.dir, "many.tar")
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		e.tb.Fatalf("%v", err)
	}
	defer os.Remove(path)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, e.bins.Ctr, "--address", nd.ctrd.Socket, "-n", nd.ctrd.Namespace,
		"images", "import", "--no-unpack", "--all-platforms", path).CombinedOutput()
	if err != nil {
		e.tb.Fatalf("ctr images import: %v\n%s", err, out)
	}
}

// rssMiB is a process's resident set size.
func rssMiB(pid int) float64 { return statusMiB(pid, "VmRSS:") }

// statusMiB is a kB field of /proc/PID/status, in MiB.
func statusMiB(pid int, field string) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field {
			kb, _ := strconv.ParseFloat(f[1], 64)
			return kb / 1024
		}
	}
	return 0
}

// cpuSeconds is a process's user plus system CPU time.
func cpuSeconds(pid int) float64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:]) // fields after the command name
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	sy, _ := strconv.ParseFloat(f[12], 64)
	return (u + sy) / 100 // USER_HZ
}
