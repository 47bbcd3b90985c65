//go:build e2e

// Smoke tests of the end-to-end harness itself: a real registry, real
// containerd nodes and crictl, without Shoal. Run as root:
//
//	go test -tags e2e -run Smoke -v -count=1 ./e2e/
package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/shoalproject/shoal/e2e/harness"
)

// smokeHost is the registry name the nodes pull from; only hosts.toml
// knows where it is.
const smokeHost = "registry.shoal.test"

// runtimes lists the containerd flavours under test.
var runtimes = []struct {
	name   string
	legacy bool
	node   int // node number: the node's address is harness.LoopbackIP(node)
}{{"containerd-2.4", false, 1}, {"containerd-1.6", true, 2}}

func prepare(t *testing.T, legacy bool) harness.Bins {
	t.Helper()
	if err := harness.CheckRoot(); err != nil {
		t.Skip(err)
	}
	bins, err := harness.FindBinaries()
	if err != nil {
		t.Fatal(err)
	}
	if legacy && bins.Containerd16 == "" {
		t.Skip("Debian containerd 1.6 (/usr/bin/containerd) is not installed; hack/install-deps.sh installs it")
	}
	return bins
}

func TestSmokeHarness(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	img := reg.SeedRandom(t, "smoke/app", "v1", 2, 1<<20)
	t.Logf("seeded %s: manifest %s, layers %v", img.Ref, img.Digest, img.Layers)
	ref := img.RefIn(smokeHost)

	for _, rt := range runtimes {
		t.Run(rt.name, func(t *testing.T) {
			prepare(t, rt.legacy)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			node := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{Legacy: rt.legacy, IP: harness.LoopbackIP(rt.node)})
			node.WriteHosts(t, smokeHost, harness.HostsTOML(reg.URL(), reg.URL()))

			out, err := node.CRIPull(ctx, ref)
			if err != nil {
				t.Fatalf("crictl pull: %v\n--- containerd log:\n%s", err, node.LogTail(30))
			}
			t.Logf("crictl pull: %s", strings.TrimSpace(out))
			checkImage(ctx, t, node, img)

			// Every blob is in the content store, readable on disk where
			// Shoal's --containerd-content-dir reads it.
			for _, b := range img.Blobs() {
				fi, err := os.Stat(filepath.Join(node.ContentDir, "blobs", "sha256", b.Digest.Encoded()))
				if err != nil || fi.Size() != b.Size {
					t.Errorf("blob %s on disk: %v (size %v, want %d)", b.Digest, err, fi, b.Size)
				}
			}

			// The image survives a containerd restart; rmi removes it.
			node.Restart(t)
			checkImage(ctx, t, node, img)
			if out, err := node.RemoveImage(ctx, ref); err != nil {
				t.Fatalf("crictl rmi: %v: %s", err, out)
			}
			if imgs, _ := node.ListImages(ctx); findImage(imgs, ref) != nil {
				t.Errorf("image still listed after rmi")
			}
		})
	}

	// The upstream can be taken down and brought back with its data.
	t.Run("registry-restart", func(t *testing.T) {
		if err := reg.Stop(); err != nil {
			t.Fatal(err)
		}
		if _, err := http.Get(reg.URL() + "/v2/"); err == nil {
			t.Fatal("registry still answers after Stop")
		}
		if err := reg.Start(); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if out, err := reg.Crane(ctx, "digest", img.Ref); err != nil || strings.TrimSpace(out) != img.Digest.String() {
			t.Fatalf("after restart: crane digest = %q, %v", out, err)
		}
	})
}

// checkImage asserts CRI lists img under smokeHost and ctr sees its blobs.
func checkImage(ctx context.Context, t *testing.T, node *harness.Containerd, img harness.Image) {
	t.Helper()
	imgs, err := node.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := findImage(imgs, img.RefIn(smokeHost))
	if got == nil {
		t.Fatalf("crictl images does not list %s: %+v", img.RefIn(smokeHost), imgs)
	}
	if want := smokeHost + "/" + img.Repo + "@" + img.Digest.String(); !slices.Contains(got.RepoDigests, want) {
		t.Errorf("repoDigests = %v, want %s", got.RepoDigests, want)
	}
	// ctr content ls lists the manifest, config and every layer.
	var want []digest.Digest
	for _, b := range img.Blobs() {
		want = append(want, b.Digest)
	}
	missing, err := node.HasContent(ctx, want...)
	if err != nil {
		t.Fatal(err)
	}
	if len(missing) > 0 {
		out, _ := node.Ctr(ctx, "content", "ls")
		t.Errorf("ctr content ls lacks %v:\n%s", missing, out)
	}
}

func findImage(imgs []harness.CRIImage, ref string) *harness.CRIImage {
	for i := range imgs {
		if slices.Contains(imgs[i].RepoTags, ref) {
			return &imgs[i]
		}
	}
	return nil
}

// request is one request the logging mirror received.
type request struct {
	Method, Path, Query string
	Accept, Range       string
	UserAgent           string
}

// logMirror records what containerd asks a mirror for. It answers 404 to
// everything, except that with upstream set it proxies blobs from there and
// cuts the first response for each blob half-way by aborting the
// connection.
type logMirror struct {
	upstream string

	mu   sync.Mutex
	reqs []request
	cut  map[string]bool
}

func (m *logMirror) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	m.mu.Lock()
	m.reqs = append(m.reqs, request{r.Method, r.URL.Path, r.URL.RawQuery,
		r.Header.Get("Accept"), r.Header.Get("Range"), r.Header.Get("User-Agent")})
	first := !m.cut[r.URL.Path]
	if m.cut == nil {
		m.cut = map[string]bool{}
	}
	m.cut[r.URL.Path] = true
	m.mu.Unlock()
	if m.upstream == "" || !strings.Contains(r.URL.Path, "/blobs/") {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"errors":[{"code":"BLOB_UNKNOWN","message":"not here"}]}`))
		return
	}
	req, _ := http.NewRequestWithContext(r.Context(), r.Method, m.upstream+r.URL.Path, nil)
	if rg := r.Header.Get("Range"); rg != "" {
		req.Header.Set("Range", rg)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.WriteHeader(http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, v := range resp.Header {
		w.Header()[k] = v
	}
	w.WriteHeader(resp.StatusCode)
	if first && resp.ContentLength > 1024 {
		io.CopyN(w, resp.Body, resp.ContentLength/2)
		w.(http.Flusher).Flush()
		panic(http.ErrAbortHandler) // closes the connection mid-body
	}
	io.Copy(w, resp.Body)
}

func (m *logMirror) requests() []request {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.reqs)
}

// TestSmokeMirrorRequests shows what a containerd CRI pull sends to a
// mirror listed in _default/hosts.toml, the contract Shoal's mirror API
// relies on:
//   - every request carries ?ns=<registry name>; the tag is resolved with
//     HEAD, the manifest by digest and the blobs are fetched with GET;
//   - a 404 makes containerd try the next host (a second [host], or the
//     `server` alone), for the tag, the manifest and every blob;
//   - a mirror that is down (connection refused) is skipped the same way;
//   - a blob body cut mid-way is resumed on the same mirror with
//     `Range: bytes=<received>-`; the bytes already received are kept.
func TestSmokeMirrorRequests(t *testing.T) {
	prepare(t, false)
	reg := harness.StartRegistry(t, t.TempDir(), "")
	img := reg.SeedRandom(t, "smoke/app", "v1", 2, 1<<20)

	for _, rt := range runtimes {
		for _, mode := range []string{"second-host", "server-only", "mirror-down", "abort-resume"} {
			t.Run(rt.name+"/"+mode, func(t *testing.T) {
				prepare(t, rt.legacy)
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				mirror := &logMirror{}
				if mode == "abort-resume" {
					mirror.upstream = reg.URL()
				}
				srv := httptest.NewServer(mirror)
				defer srv.Close()
				mirrorURL := srv.URL
				if mode == "mirror-down" {
					mirrorURL = "http://" + harness.FreeAddr("127.0.0.1")
				}

				node := harness.StartContainerd(t, t.TempDir(), harness.ContainerdOptions{Legacy: rt.legacy, LogLevel: "debug"})
				hosts := []string{mirrorURL}
				if mode == "second-host" {
					hosts = append(hosts, reg.URL())
				}
				node.WriteHosts(t, "_default", harness.HostsTOML(reg.URL(), hosts...))

				out, err := node.CRIPull(ctx, img.RefIn(smokeHost))
				if err != nil {
					t.Fatalf("crictl pull: %v\n--- containerd log:\n%s", err, node.LogTail(40))
				}
				t.Logf("crictl pull: %s", strings.TrimSpace(out))
				checkImage(ctx, t, node, img)

				reqs := mirror.requests()
				if mode == "mirror-down" {
					return
				}
				seen := map[string]bool{}
				for _, r := range reqs {
					t.Logf("mirror got: %s %s?%s Accept=%q Range=%q UA=%q", r.Method, r.Path, r.Query, r.Accept, r.Range, r.UserAgent)
					q, _ := url.ParseQuery(r.Query)
					if got := q.Get("ns"); got != smokeHost {
						t.Errorf("%s %s: ns=%q, want %q", r.Method, r.Path, got, smokeHost)
					}
					seen[r.Method+" "+r.Path] = true
					if r.Range != "" {
						seen["resume "+r.Path+" "+r.Range] = true
					}
				}
				// The mirror is asked for the tag and, after the fallback
				// resolved it, for the manifest by digest and every blob.
				want := []string{"HEAD /v2/smoke/app/manifests/v1", "GET /v2/smoke/app/manifests/" + img.Digest.String()}
				for _, b := range img.Blobs()[1:] {
					want = append(want, "GET /v2/smoke/app/blobs/"+b.Digest.String())
				}
				if mode == "abort-resume" {
					for _, l := range img.Layers {
						want = append(want, fmt.Sprintf("resume /v2/smoke/app/blobs/%s bytes=%d-", l.Digest, l.Size/2))
					}
				}
				for _, w := range want {
					if !seen[w] {
						t.Errorf("the mirror never got %s", w)
					}
				}
			})
		}
	}
}
