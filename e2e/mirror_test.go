//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/e2e/harness"
)

// single is one node: a real containerd configured by `shoal configure`, and
// `shoal run` beside it, in front of a real registry on 127.0.0.1.
type single struct {
	reg     *harness.Registry
	node    *harness.Containerd
	shoal   *harness.Shoal
	corrupt *corrupted // what the corrupt.shoal.test upstream spoiled
}

// corruptHost is an ns whose upstream flips a byte in every blob body.
const corruptHost = "corrupt.shoal.test"

func startSingle(t *testing.T, legacy bool, nodeNum int, extraArgs ...string) *single {
	t.Helper()
	prepare(t, legacy)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	proxy, spoiled := corruptingProxy(t, reg.URL())
	node := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{Legacy: legacy, IP: harness.LoopbackIP(nodeNum)})
	dir := t.TempDir()
	s := harness.StartShoal(t, shoalBin, dir, node, harness.ShoalOptions{Upstreams: map[string]string{
		smokeHost:   reg.URL(),
		corruptHost: proxy,
	}, Args: extraArgs})
	out := s.Configure(t, node)
	t.Logf("shoal configure: %s", strings.TrimSpace(out))
	return &single{reg: reg, node: node, shoal: s, corrupt: spoiled}
}

// corrupted counts the blob bodies a corrupting proxy spoiled, by digest.
type corrupted struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *corrupted) add(d string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.counts[d]++
}

func (c *corrupted) count(d digest.Digest) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.counts[d.String()]
}

// corruptingProxy forwards to the registry and flips one byte in the middle of
// every blob body over 64 KiB (layers, not configs), keeping its length: only
// the digest can tell.
func corruptingProxy(t *testing.T, target string) (string, *corrupted) {
	t.Helper()
	u, _ := url.Parse(target)
	spoiled := &corrupted{counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/") && resp.StatusCode == 200 && resp.Request.Method == "GET" {
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				return err
			}
			resp.Body.Close()
			if len(body) > 64<<10 {
				body[len(body)/2] ^= 0x55
				spoiled.add(resp.Request.URL.Path[strings.LastIndexByte(resp.Request.URL.Path, '/')+1:])
			}
			resp.Body = io.NopCloser(strings.NewReader(string(body)))
		}
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String(), spoiled
}

func TestSingleNodePull(t *testing.T) {
	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			n := startSingle(t, rt.legacy, rt.node)
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			img := n.reg.SeedRandom(t, "e2e/app", "v1", 3, 1<<20)
			other := n.reg.SeedRandom(t, "e2e/other", "v2", 2, 512<<10)

			// By tag: the name resolves nowhere, so only Shoal can serve it.
			if out, err := n.node.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
				t.Fatalf("crictl pull by tag: %v\n%s", err, out)
			}
			var layerBytes int64
			for _, l := range img.Layers {
				layerBytes += l.Size
			}
			if got := n.shoal.ServedBytes("upstream"); got < float64(layerBytes) {
				t.Fatalf("served upstream bytes %v, want at least the layers' %d", got, layerBytes)
			}
			if missing, err := n.node.HasContent(ctx, img.Layers[0].Digest); err != nil || len(missing) > 0 {
				t.Fatalf("layer not in containerd after pull: %v %v", missing, err)
			}
			// By digest.
			if out, err := n.node.CRIPull(ctx, other.DigestRefIn(smokeHost)); err != nil {
				t.Fatalf("crictl pull by digest: %v\n%s", err, out)
			}

			// A later request for the node's own content is served locally.
			before := n.shoal.ServedBytes("local")
			layer := img.Layers[1]
			resp, err := http.Get(fmt.Sprintf("%s/v2/e2e/app/blobs/%s?ns=%s", n.shoal.RegistryURL, layer.Digest, smokeHost))
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || int64(len(body)) != layer.Size {
				t.Fatalf("local blob: %d, %d bytes", resp.StatusCode, len(body))
			}
			waitFor(t, "local bytes counted", func() bool { return n.shoal.ServedBytes("local")-before >= float64(layer.Size) })

			// A manifest by tag, once the upstream is gone, comes from the
			// node's own image store.
			n.reg.Stop()
			resp, err = http.Get(fmt.Sprintf("%s/v2/e2e/app/manifests/v1?ns=%s", n.shoal.RegistryURL, smokeHost))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != img.Digest.String() {
				t.Fatalf("tag with upstream down: %d %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
			}
		})
	}
}

func TestCorruptUpstreamFailsCleanly(t *testing.T) {
	n := startSingle(t, false, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	img := n.reg.SeedRandom(t, "e2e/bad", "v1", 1, 2<<20)
	out, err := n.node.CRIPull(ctx, img.RefIn(corruptHost))
	if err == nil {
		t.Fatalf("pull of corrupt blobs succeeded:\n%s", out)
	}
	t.Logf("pull failed as it must: %s", lastLine(out))
	// containerd may collect garbage at any moment once the failed pull's
	// lease is gone; collect it now, so that nothing below can depend on
	// what it happens to keep.
	for _, args := range [][]string{{"leases", "create", "--id", "e2e-gc"}, {"leases", "delete", "--sync", "e2e-gc"}} {
		if out, err := n.node.Ctr(ctx, args...); err != nil {
			t.Fatalf("ctr %v: %v\n%s", args, err, out)
		}
	}
	layer := img.Layers[0]
	// The pull reached the layer: Shoal fetched it and the proxy spoiled it.
	// (Not "the config is in containerd": containerd may garbage-collect an
	// unreferenced blob as soon as the failed pull's lease ends.)
	if n.corrupt.count(layer.Digest) == 0 {
		t.Fatal("the layer was never fetched through the corrupting upstream")
	}
	// Shoal saw the mismatch on that layer, and counted an upstream failure.
	logText, err := os.ReadFile(n.shoal.Proc.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	if !logHas(string(logText), "digest mismatch", layer.Digest.String()) {
		t.Fatalf("shoal did not report a digest mismatch on %s:\n%s", layer.Digest, n.shoal.Proc.Tail(40))
	}
	if c := n.shoal.Metric("shoal_errors_total", map[string]string{"kind": "upstream"}); c < 1 {
		t.Fatalf("shoal_errors_total{kind=upstream} = %v after a corrupt upstream", c)
	}
	// The corrupt layer never committed: containerd checks the digest
	// itself before it commits, so a missing layer stays missing.
	if missing, err := n.node.HasContent(ctx, layer.Digest); err != nil || len(missing) != 1 {
		t.Fatalf("corrupt layer committed in containerd: missing=%v err=%v", missing, err)
	}
	// No corrupt layer was ever served as a complete response: Shoal cut
	// the connection instead of ending the body.
	if !logHas(string(logText), "aborting response", layer.Digest.String()) {
		t.Fatalf("shoal did not abort the response for %s:\n%s", layer.Digest, n.shoal.Proc.Tail(40))
	}
	if c := n.shoal.Metric("shoal_served_bytes_total", map[string]string{"source": "upstream"}); c >= float64(img.Config.Size+layer.Size) {
		t.Fatalf("served %v upstream bytes: the corrupt layer was delivered in full", c)
	}
	// Nothing is left spooled once the failed transfers are released
	// (asynchronously, after their last reader), and the daemon is alive.
	waitFor(t, "spool empty", func() bool { return len(n.shoal.SpoolFiles()) == 0 })
	if code := get(t, n.shoal.DebugURL+"/healthz"); code != 200 || !n.shoal.Proc.Alive() {
		t.Fatalf("healthz %d after corrupt pull", code)
	}
}

// logHas reports whether one line of a log holds every one of words.
func logHas(log string, words ...string) bool {
	for _, line := range strings.Split(log, "\n") {
		all := true
		for _, w := range words {
			all = all && strings.Contains(line, w)
		}
		if all {
			return true
		}
	}
	return false
}

// Bad inputs each get a 4xx and leave the daemon alive.
func TestBadInputs(t *testing.T) {
	n := startSingle(t, false, 4)
	d := "sha256:" + strings.Repeat("ab", 32)
	host := strings.TrimPrefix(n.shoal.RegistryURL, "http://")
	tests := []struct{ name, target string }{
		{"dotdot", "/v2/../../etc/passwd/blobs/" + d},
		{"dotdot in name", "/v2/a/../b/blobs/" + d},
		{"encoded dotdot", "/v2/a/%2e%2e/b/blobs/" + d},
		{"malformed digest", "/v2/a/blobs/sha256:xyz"},
		{"short digest", "/v2/a/blobs/sha256:1234"},
		{"unknown algorithm", "/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e"},
		{"ns link-local", "/v2/a/blobs/" + d + "?ns=169.254.169.254"},
		{"ns loopback", "/v2/a/manifests/latest?ns=127.0.0.1:5000"},
		{"ns localhost", "/v2/a/manifests/latest?ns=localhost"},
		{"ns ipv6 loopback", "/v2/a/blobs/" + d + "?ns=[::1]"},
		{"ns garbage", "/v2/a/blobs/" + d + "?ns=%00%ff/../x"},
		{"ns url", "/v2/a/blobs/" + d + "?ns=http://evil"},
		{"name over 255", "/v2/" + strings.Repeat("a", 256) + "/manifests/latest?ns=" + smokeHost},
		{"bad tag", "/v2/a/manifests/-bad?ns=" + smokeHost},
		{"push", "/v2/a/blobs/uploads/"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code := rawGet(t, host, tt.target)
			if code < 400 || code > 499 || code == 408 || code == 429 {
				t.Fatalf("%s: status %d, want a 4xx other than 408/429", tt.target, code)
			}
		})
	}
	if code := get(t, n.shoal.DebugURL+"/healthz"); code != 200 || !n.shoal.Proc.Alive() {
		t.Fatalf("daemon not alive after bad inputs: healthz %d", code)
	}
}

// With the content directory unreadable, blobs come through the content API.
func TestContentAPIFallback(t *testing.T) {
	n := startSingle(t, false, 7, "--containerd-content-dir", "/nonexistent/content")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img := n.reg.SeedRandom(t, "e2e/api", "v1", 2, 1<<20)
	if out, err := n.node.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	for _, want := range img.Blobs() {
		kind := "blobs"
		if want.Digest == img.Manifest.Digest {
			kind = "manifests"
		}
		resp, err := http.Get(fmt.Sprintf("%s/v2/e2e/api/%s/%s", n.shoal.RegistryURL, kind, want.Digest))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || int64(len(body)) != want.Size || digestOf(body) != want.Digest {
			t.Fatalf("%s %s through the content API: %d, %d bytes", kind, want.Digest, resp.StatusCode, len(body))
		}
	}
	// A Range request through the API path.
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/v2/e2e/api/blobs/%s", n.shoal.RegistryURL, img.Layers[0].Digest), nil)
	req.Header.Set("Range", "bytes=100-199")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 206 || len(body) != 100 {
		t.Fatalf("range through the content API: %d, %d bytes", resp.StatusCode, len(body))
	}
	if !strings.Contains(n.shoal.Proc.Tail(200), "content directory unreadable") {
		t.Fatal("no warning about the unreadable content directory")
	}
}

// containerd restarting makes the node unready, then ready again, without
// restarting Shoal.
func TestContainerdRestart(t *testing.T) {
	n := startSingle(t, false, 5)
	n.node.Stop(t)
	waitFor(t, "unready while containerd is down", func() bool { return get(t, n.shoal.DebugURL+"/readyz") == 503 })
	n.node.Restart(t)
	waitFor(t, "ready again", func() bool { return get(t, n.shoal.DebugURL+"/readyz") == 200 })
	if !n.shoal.Proc.Alive() {
		t.Fatal("shoal died while containerd restarted")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img := n.reg.SeedRandom(t, "e2e/after-restart", "v1", 1, 256<<10)
	if out, err := n.node.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
		t.Fatalf("pull after containerd restart: %v\n%s", err, out)
	}
}

// SIGTERM lets an in-flight response finish.
func TestGracefulShutdown(t *testing.T) {
	n := startSingle(t, false, 6)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	img := n.reg.SeedRandom(t, "e2e/big", "v1", 1, 32<<20)
	if out, err := n.node.CRIPull(ctx, img.RefIn(smokeHost)); err != nil {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	layer := img.Layers[0]
	resp, err := http.Get(fmt.Sprintf("%s/v2/e2e/big/blobs/%s", n.shoal.RegistryURL, layer.Digest))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	first := make([]byte, 1<<20)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	if err := n.shoal.Proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // let the signal land while the body is half read
	rest, err := io.Copy(io.Discard, resp.Body)
	if err != nil || int64(len(first))+rest != layer.Size {
		t.Fatalf("in-flight response cut by SIGTERM: %d of %d bytes, %v", int64(len(first))+rest, layer.Size, err)
	}
	select {
	case <-n.shoal.Proc.Done():
	case <-time.After(30 * time.Second):
		t.Fatal("shoal did not exit after SIGTERM")
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func get(t *testing.T, u string) int {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(u)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}

// rawGet sends the request target byte for byte: Go's client would clean "..".
func rawGet(t *testing.T, host, target string) int {
	t.Helper()
	conn, err := net.DialTimeout("tcp", host, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	method := "GET"
	if strings.HasSuffix(target, "/uploads/") {
		method = "POST"
	}
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: %s\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", method, target, host)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s: %v", target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}
