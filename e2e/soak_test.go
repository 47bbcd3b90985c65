//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/e2e/harness"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/peerlink"
	"github.com/shoalproject/shoal/pkg/routing"
	"github.com/shoalproject/shoal/pkg/routing/bootstrap"
)

// Soak limits, stated so the test can hold the daemon to them.
const (
	soakMaxSpool     = 128 << 20
	soakMaxTransfers = 16
	soakRSSBound     = 256 << 20 // the daemon's resident memory under attack
)

// bulkHost is an upstream that serves any blob anyone asks for: 64 MiB of
// noise at full speed, as an attacker's choice of large public blobs would.
const bulkHost = "bulk.shoal.test"

// TestSoak: while one node serves a steady series of real CRI pulls, attack
// it with malformed requests, idle and slow connections, large transfers
// dropped after their first bytes, a peer that trickles and one that lies
// about sizes. Every legitimate pull must succeed and verify, within twice
// its unattacked time; the daemon's memory and spool must stay within their
// bounds; and no goroutine or file descriptor may leak.
func TestSoak(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	img := reg.SeedRandom(t, "soak/app", "v1", 3, 8<<20)
	bulk := bulkUpstream(t)
	ctrd := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{IP: harness.LoopbackIP(95)})
	s := harness.StartShoal(t, shoalBin, t.TempDir(), ctrd, harness.ShoalOptions{
		Upstreams: map[string]string{smokeHost: reg.URL(), bulkHost: bulk},
		Args: []string{"--log-level", "info", "--max-spool", strconv.Itoa(soakMaxSpool),
			"--max-transfers", strconv.Itoa(soakMaxTransfers)}})
	// As on a real node, containerd can pull directly when Shoal answers 404
	// (a limit reached under the attack) or drops a connection.
	ctrd.WriteHosts(t, smokeHost, harness.HostsTOML(reg.URL(), s.RegistryURL, reg.URL()))
	nd := &node{num: 95, ctrd: ctrd, shoal: s}
	// The trickler advertises blobs nobody else has; the liar, blobs the
	// upstream has, of which it declares a false size and sends 100 bytes.
	lies := reg.SeedRandom(t, "soak/lies", "v1", 3, 1<<20)
	trickler := startBadPeer(t, nd, 96, "trickle", nil)
	liar := startBadPeer(t, nd, 97, "lie", layerDigests(lies))
	ctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
	defer cancel()

	pull := func() time.Duration {
		start := time.Now()
		if out, err := ctrd.CRIPull(ctx, img.DigestRefIn(smokeHost)); err != nil {
			t.Fatalf("a legitimate pull failed: %v\n%s", err, out)
		}
		took := time.Since(start)
		if missing, err := ctrd.HasContent(ctx, layerDigests(img)...); err != nil || len(missing) > 0 {
			t.Fatalf("a legitimate pull left %v missing (%v)", missing, err)
		}
		ctrd.RemoveImage(ctx, img.DigestRefIn(smokeHost))
		var ds []string
		for _, b := range img.Blobs() {
			ds = append(ds, b.Digest.String())
		}
		ctrd.Ctr(ctx, append([]string{"content", "rm"}, ds...)...)
		return took
	}
	var calm []time.Duration
	for range 4 {
		calm = append(calm, pull())
	}
	goroutines0, fds0 := s.Metric("go_goroutines", nil), s.Metric("process_open_fds", nil)

	// The attack, all at once.
	var attack sync.WaitGroup
	stop := make(chan struct{})
	var hostile, hostile4xx, dropped atomic.Int64
	attack.Go(func() { hostileRequests(t, s, stop, &hostile, &hostile4xx) })
	attack.Go(func() { slowConnections(t, s, stop, 500) })
	attack.Go(func() { dropLargeTransfers(t, s, 100, &dropped) })
	attack.Go(func() { askBadPeers(t, s, trickler.digests, "") })
	attack.Go(func() { askBadPeers(t, s, liar.digests, smokeHost) })

	// Watch memory and the spool while legitimate pulls go on.
	var maxRSS, maxSpool atomic.Int64
	watching := make(chan struct{})
	go func() {
		defer close(watching)
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			maxRSS.Store(max(maxRSS.Load(), rss(s.Proc.Pid())))
			maxSpool.Store(max(maxSpool.Load(), int64(s.Metric("shoal_spool_bytes", nil)), dirBytes(filepath.Join(s.Dir, "data", "spool"))))
		}
	}()
	var stormy []time.Duration
	for hostile.Load() < 9900 || len(stormy) < 7 {
		stormy = append(stormy, pull())
		if ctx.Err() != nil {
			t.Fatal("the attack did not end in time")
		}
	}
	close(stop)
	attack.Wait()
	<-watching
	// Calm pulls after the attack too: this machine's load drifts, and
	// pulls on both sides of the attack make a fairer yardstick.
	for range 3 {
		calm = append(calm, pull())
	}

	calmMed, stormMed := medianDur(calm), medianDur(stormy)
	t.Logf("legitimate pulls: %d calm, median %v; %d under attack, median %v (%.2fx)",
		len(calm), calmMed, len(stormy), stormMed, float64(stormMed)/float64(calmMed))
	t.Logf("attack: %d hostile requests (%d answered 4xx), 500 idle or slow connections, %d large transfers dropped, "+
		"a trickling peer and a lying one", hostile.Load(), hostile4xx.Load(), dropped.Load())
	t.Logf("daemon: max RSS %.1f MiB (bound %d MiB), max spool %.1f MiB (--max-spool %d MiB), refused: transfers %v, spool %v",
		float64(maxRSS.Load())/(1<<20), soakRSSBound>>20, float64(maxSpool.Load())/(1<<20), soakMaxSpool>>20,
		s.Metric("shoal_refused_total", map[string]string{"reason": "transfers"}),
		s.Metric("shoal_refused_total", map[string]string{"reason": "spool"}))
	if stormMed > 2*calmMed {
		t.Errorf("pulls under attack took %v (median), over twice the %v of calm ones", stormMed, calmMed)
	}
	if maxRSS.Load() > soakRSSBound {
		t.Errorf("RSS reached %d MiB, over the %d MiB bound", maxRSS.Load()>>20, soakRSSBound>>20)
	}
	if maxSpool.Load() > soakMaxSpool {
		t.Errorf("the spool reached %d bytes, over --max-spool %d", maxSpool.Load(), soakMaxSpool)
	}
	if hostile4xx.Load() < hostile.Load()*9/10 {
		t.Errorf("only %d of %d hostile requests got a 4xx", hostile4xx.Load(), hostile.Load())
	}
	// The bad peers were caught.
	logText, _ := os.ReadFile(s.Proc.LogPath)
	for _, want := range []string{"stalled, trickled or cut its body short", "failed verification, or a false size"} {
		if !strings.Contains(string(logText), want) {
			t.Errorf("the daemon never logged %q", want)
		}
	}
	// Leaks: once the dust settles (transfers linger, connections time out).
	waitFor(t, "goroutines and descriptors to settle", func() bool {
		return s.Metric("go_goroutines", nil) <= goroutines0+25 && s.Metric("process_open_fds", nil) <= fds0+10 &&
			len(s.SpoolFiles()) == 0
	})
	t.Logf("goroutines %v -> %v, open fds %v -> %v", goroutines0, s.Metric("go_goroutines", nil), fds0, s.Metric("process_open_fds", nil))
	if !s.Proc.Alive() {
		t.Fatal("the daemon died")
	}
}

func medianDur(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func rss(pid int) int64 {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func dirBytes(dir string) int64 {
	var n int64
	filepath.Walk(dir, func(_ string, fi os.FileInfo, err error) error {
		if err == nil && !fi.IsDir() {
			n += fi.Size()
		}
		return nil
	})
	return n
}

// hostileRequests sends malformed requests until told to stop.
func hostileRequests(t *testing.T, s *harness.Shoal, stop <-chan struct{}, sent, fourxx *atomic.Int64) {
	long := strings.Repeat("a", 3000)
	d := digest.FromString("x").String()
	paths := []string{
		"/v2/../../etc/passwd", "/v2/%2e%2e/blobs/" + d, "/v2/" + long + "/blobs/" + d, "/v2/a/blobs/sha256:zz",
		"/v2/a/blobs/sha256:" + strings.Repeat("0", 63), "/v2/a/manifests/" + long, "/v2/a/blobs/md5:abc",
		"/v2/a/blobs/" + d + "?ns=169.254.169.254", "/v2/a/blobs/" + d + "?ns=localhost:5000", "/v2/a/manifests/v1?ns=" + long,
		"/v2/a/manifests/v1?ns=a&ns=b", "/v2/A/blobs/" + d, "/v2//blobs/" + d, "/v2/a/tags/list?n=-1&ns=" + smokeHost,
		"/v3/", "/v2/a/blobs/uploads/",
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	var wg sync.WaitGroup
	const workers, total = 8, 10000
	for w := range workers {
		wg.Go(func() {
			for i := w; i < total; i += workers {
				select {
				case <-stop:
					return
				default:
				}
				// About 400 a second in all: an attack that keeps up for
				// the whole run, rather than a burst.
				time.Sleep(workers * time.Second / 400)
				req, _ := http.NewRequest(http.MethodGet, s.RegistryURL+paths[i%len(paths)], nil)
				if i%97 == 0 {
					req.Header.Set("X-Pad", strings.Repeat("p", 1<<20)) // 1 MiB of headers
				}
				if i%13 == 0 {
					req.Method = http.MethodPut
				}
				resp, err := client.Do(req)
				sent.Add(1)
				if err != nil {
					continue // a connection the server cut: fine
				}
				io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
				resp.Body.Close()
				if resp.StatusCode >= 400 && resp.StatusCode < 500 {
					fourxx.Add(1)
				} else if resp.StatusCode >= 500 || resp.StatusCode == 408 || resp.StatusCode == 429 {
					t.Errorf("hostile request %s answered %d", paths[i%len(paths)], resp.StatusCode)
				}
			}
		})
	}
	wg.Wait()
}

// slowConnections holds n connections to the mirror: half idle, half
// sending their headers a byte at a time.
func slowConnections(t *testing.T, s *harness.Shoal, stop <-chan struct{}, n int) {
	addr := strings.TrimPrefix(s.RegistryURL, "http://")
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			c, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				return // refused at the cap: fine
			}
			defer c.Close()
			if i%2 == 0 {
				<-stop
				return
			}
			line := "GET /v2/ HTTP/1.1\r\nHost: x\r\nX-Slow: " + strings.Repeat("s", 10000)
			for j := 0; j < len(line); j++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Second):
				}
				if _, err := c.Write([]byte{line[j]}); err != nil {
					return // cut by the header timeout: as it should be
				}
			}
		})
	}
	wg.Wait()
}

// dropLargeTransfers starts n transfers of distinct large blobs and drops
// each after its first bytes.
func dropLargeTransfers(t *testing.T, s *harness.Shoal, n int, dropped *atomic.Int64) {
	client := &http.Client{Timeout: 20 * time.Second}
	var wg sync.WaitGroup
	sem := make(chan struct{}, 20)
	for range n {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			b := make([]byte, 32)
			rand.Read(b)
			d := digest.NewDigestFromBytes(digest.SHA256, b)
			resp, err := client.Get(fmt.Sprintf("%s/v2/bulk/blobs/%s?ns=%s", s.RegistryURL, d, bulkHost))
			if err != nil {
				return
			}
			io.CopyN(io.Discard, resp.Body, 64<<10)
			resp.Body.Close()
			dropped.Add(1)
		})
	}
	wg.Wait()
}

// bulkUpstream serves 64 MiB of noise for any blob.
func bulkUpstream(t *testing.T) string {
	noise := make([]byte, 1<<20)
	rand.Read(noise)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.Contains(r.URL.Path, "/blobs/") {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(64<<20))
		for range 64 {
			if _, err := w.Write(noise); err != nil {
				return
			}
		}
	})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String()
}

// badPeer is a member that advertises blobs and misbehaves serving them.
type badPeer struct{ digests []digest.Digest }

// startBadPeer joins the cluster as node num and advertises blobs (ds, or 5
// random ones) that it serves by trickling them ("trickle") or by declaring
// a false size and closing early ("lie").
func startBadPeer(t *testing.T, seed *node, num int, how string, ds []digest.Digest) badPeer {
	t.Helper()
	ip := harness.LoopbackIP(num)
	ln, err := net.Listen("tcp", ip+":0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	key, _ := hex.DecodeString(harness.TestClusterKey)
	r, err := routing.New(ctx, routing.Config{
		ListenAddr: harness.FreeAddr(ip), DataDir: filepath.Join(t.TempDir(), how), Secret: key,
		MirrorAddr: ln.Addr().String(), MirrorScheme: "https",
		Bootstrap: bootstrap.Static([]string{seed.p2pAddr()}),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	id, err := peerlink.NewIdentity(r.PrivateKey())
	if err != nil {
		t.Fatal(err)
	}
	srv := peerlink.NewServer(peerlink.ServerConfig{Identity: id, Members: r, Handler: http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.Header.Get(peer.Header) == "" {
			http.NotFound(w, req)
			return
		}
		switch how {
		case "trickle":
			w.Header().Set("Content-Length", strconv.Itoa(1<<20))
			w.WriteHeader(http.StatusOK)
			for range 1 << 20 {
				if _, err := w.Write([]byte{'t'}); err != nil {
					return
				}
				w.(http.Flusher).Flush()
				select {
				case <-time.After(200 * time.Millisecond):
				case <-req.Context().Done():
					return
				}
			}
		case "lie":
			w.Header().Set("Content-Length", strconv.Itoa(10<<20))
			w.WriteHeader(http.StatusOK)
			w.Write(make([]byte, 100))
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler)
		}
	})})
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	bp := badPeer{digests: ds}
	for len(ds) == 0 && len(bp.digests) < 5 {
		b := make([]byte, 32)
		rand.Read(b)
		bp.digests = append(bp.digests, digest.NewDigestFromBytes(digest.SHA256, b))
	}
	var keys []string
	for _, d := range bp.digests {
		keys = append(keys, d.String())
	}
	waitFor(t, "the bad peer to join", func() bool { return len(r.Peers()) > 0 })
	if err := r.Advertise(ctx, keys...); err != nil {
		t.Fatalf("bad peer advertise: %v", err)
	}
	return bp
}

// askBadPeers asks the node for the bad peers' blobs, so that it meets them:
// without ns only peers can answer, and nothing may be served; with ns the
// upstream has the true blobs, and exactly those must be served.
func askBadPeers(t *testing.T, s *harness.Shoal, ds []digest.Digest, ns string) {
	client := &http.Client{Timeout: 60 * time.Second}
	var wg sync.WaitGroup
	for _, d := range ds {
		wg.Go(func() {
			url := fmt.Sprintf("%s/v2/soak/lies/blobs/%s", s.RegistryURL, d)
			if ns != "" {
				url += "?ns=" + ns
			}
			// Under the attack a connection may be shed, or a limit reached
			// (a 404): a client retries, as containerd would.
			for try := 0; ; try++ {
				resp, err := client.Get(url)
				var b []byte
				if err == nil {
					b, err = io.ReadAll(bufio.NewReader(resp.Body))
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d: %.300s", resp.StatusCode, b)
					}
				}
				switch {
				case ns == "" && err == nil:
					t.Errorf("the node served %d bytes of a bad peer's blob %s", len(b), d)
					return
				case ns == "" && resp != nil:
					return // answered, not with the blob
				case err == nil:
					if digest.FromBytes(b) != d {
						t.Errorf("blob %s, which a peer lied about: %d bytes that do not verify", d, len(b))
					}
					return
				case try == 10:
					t.Errorf("blob %s, which a peer lied about, never arrived: %v\nthe daemon's log of it:\n%s", d, err, logLines(s, d.Encoded()[:16], 40))
					return
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
	wg.Wait()
}

// logLines is the first n lines of the daemon's log that contain word.
func logLines(s *harness.Shoal, word string, n int) string {
	b, _ := os.ReadFile(s.Proc.LogPath)
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, word) && len(out) < n {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
