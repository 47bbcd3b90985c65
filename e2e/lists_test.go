//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/e2e/harness"
)

// serveFront serves h on a free 127.0.0.1 port until the test ends and
// returns host:port.
func serveFront(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// withNS points pr at u and adds ns to the query, as containerd does for a
// mirror: registry tools know nothing of ns, so a front adds it.
func withNS(pr *httputil.ProxyRequest, u *url.URL, ns string) {
	pr.SetURL(u)
	q := pr.In.URL.Query()
	q.Set("ns", ns)
	pr.Out.URL.RawQuery = q.Encode()
}

// nsFront forwards every request to the mirror with ns added.
func nsFront(t *testing.T, mirror, ns string) string {
	t.Helper()
	u, _ := url.Parse(mirror)
	return serveFront(t, &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { withNS(pr, u, ns) }})
}

func TestCraneThroughShoal(t *testing.T) {
	n := startSingle(t, false, 45)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	imgs := map[string]harness.Image{}
	for _, tag := range []string{"v1", "v2", "latest"} {
		imgs[tag] = n.reg.SeedRandom(t, "e2e/ls", tag, 1, 64<<10)
	}
	repo := nsFront(t, n.shoal.RegistryURL, smokeHost) + "/e2e/ls"

	crane := func(args ...string) string {
		t.Helper()
		out, err := n.reg.Crane(ctx, args...)
		if err != nil {
			t.Fatalf("crane %s: %v\n%s\n--- shoal log:\n%s", strings.Join(args, " "), err, out, n.shoal.Proc.Tail(20))
		}
		return out
	}
	if got := crane("ls", repo); got != "latest\nv1\nv2\n" {
		t.Fatalf("crane ls through Shoal: %q", got)
	}
	// The same bytes as the registry's own, whatever crane asks for.
	for tag, img := range imgs {
		got := crane("manifest", repo+":"+tag)
		if want := crane("manifest", n.reg.Host()+"/e2e/ls:"+tag); got != want || digest.FromString(got) != img.Digest {
			t.Fatalf("crane manifest %s through Shoal: %d bytes, digest %s; want %s", tag, len(got), digest.FromString(got), img.Digest)
		}
		if got := strings.TrimSpace(crane("digest", repo+":"+tag)); got != img.Digest.String() {
			t.Fatalf("crane digest %s: %s, want %s", tag, got, img.Digest)
		}
	}
	if out, err := n.reg.Crane(ctx, "ls", strings.TrimSuffix(repo, "/e2e/ls")+"/e2e/none"); err == nil {
		t.Fatalf("crane ls of an unknown repository succeeded: %s", out)
	}

	// The node pulls v1; then the registry goes away. The list then comes
	// from the node's own image store, and says so.
	if out, err := n.node.CRIPull(ctx, imgs["v1"].RefIn(smokeHost)); err != nil {
		t.Fatalf("crictl pull: %v\n%s", err, out)
	}
	if err := n.reg.Stop(); err != nil {
		t.Fatal(err)
	}
	if got := crane("ls", repo); got != "v1\n" {
		t.Fatalf("crane ls with the upstream down: %q, want the node's own v1", got)
	}
	resp, body := fetch(t, http.MethodGet, n.shoal.RegistryURL+"/v2/e2e/ls/tags/list?ns="+smokeHost)
	if resp.StatusCode != 200 || resp.Header.Get("Shoal-Source") != "local" || string(body) != `{"name":"e2e/ls","tags":["v1"]}` {
		t.Fatalf("tag list with the upstream down: %s %v %s", resp.Status, resp.Header, body)
	}
	logs, _ := os.ReadFile(n.shoal.Proc.LogPath)
	if !bytes.Contains(logs, []byte("tag list answered from the local image store")) {
		t.Fatalf("no log line says the list is the node's own:\n%s", n.shoal.Proc.Tail(20))
	}
	if got := crane("manifest", repo+":v1"); digest.FromString(got) != imgs["v1"].Digest {
		t.Fatalf("crane manifest v1 with the upstream down: digest %s", digest.FromString(got))
	}
	if out, err := n.reg.Crane(ctx, "manifest", repo+":v2"); err == nil {
		t.Fatalf("crane manifest v2, which the node never pulled, succeeded with the upstream down: %s", out)
	}
}

// fetch sends one request and reads the whole answer.
func fetch(t *testing.T, method, u string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// pushBlob uploads b to the registry (POST, then PUT with the digest).
func pushBlob(t *testing.T, reg, name string, b []byte) ocispec.Descriptor {
	t.Helper()
	d := digest.FromBytes(b)
	resp, err := http.Post(reg+"/v2/"+name+"/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc, err := resp.Location()
	if resp.StatusCode != http.StatusAccepted || err != nil {
		t.Fatalf("start upload: %s %v", resp.Status, err)
	}
	q := loc.Query()
	q.Set("digest", d.String())
	loc.RawQuery = q.Encode()
	req, _ := http.NewRequest(http.MethodPut, loc.String(), bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("upload %s: %s", d, resp.Status)
	}
	return ocispec.Descriptor{Digest: d, Size: int64(len(b))}
}

// pushManifest puts v as name:ref and returns its descriptor.
func pushManifest(t *testing.T, reg, name, ref, mediaType string, v any) ocispec.Descriptor {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if ref == "" {
		ref = digest.FromBytes(b).String()
	}
	req, _ := http.NewRequest(http.MethodPut, reg+"/v2/"+name+"/manifests/"+ref, bytes.NewReader(b))
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put manifest %s:%s: %s %s", name, ref, resp.Status, body)
	}
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// Distribution 2.8 has no referrers API: Shoal reads the referrers tag
// schema, as a client would, and filters by artifactType itself.
func TestReferrersThroughShoal(t *testing.T) {
	n := startSingle(t, false, 46)
	subject := n.reg.SeedRandom(t, "e2e/signed", "v1", 1, 64<<10)
	reg := n.reg.URL()
	const sbom, sig = "application/vnd.shoal.test.sbom", "application/vnd.shoal.test.signature"
	empty := pushBlob(t, reg, "e2e/signed", []byte("{}"))
	empty.MediaType = ocispec.MediaTypeEmptyJSON
	subjectDesc := &ocispec.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Manifest.Size}
	var referrers []ocispec.Descriptor
	for _, at := range []string{sbom, sig} {
		layer := pushBlob(t, reg, "e2e/signed", []byte("the "+at))
		layer.MediaType = "application/octet-stream"
		d := pushManifest(t, reg, "e2e/signed", "", ocispec.MediaTypeImageManifest, ocispec.Manifest{
			Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			ArtifactType: at, Config: empty, Layers: []ocispec.Descriptor{layer}, Subject: subjectDesc,
		})
		d.ArtifactType = at
		referrers = append(referrers, d)
	}
	// What oras or cosign write to a registry without the referrers API.
	pushManifest(t, reg, "e2e/signed", "sha256-"+subject.Digest.Encoded(), ocispec.MediaTypeImageIndex, ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageIndex, Manifests: referrers,
	})

	get := func(method, path string) (*http.Response, []byte) {
		t.Helper()
		return fetch(t, method, n.shoal.RegistryURL+path)
	}
	list := func(query string, want ...ocispec.Descriptor) {
		t.Helper()
		resp, body := get(http.MethodGet, "/v2/e2e/signed/referrers/"+subject.Digest.String()+"?"+query+"ns="+smokeHost)
		var idx ocispec.Index
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex || json.Unmarshal(body, &idx) != nil {
			t.Fatalf("referrers %s: %s %v %s", query, resp.Status, resp.Header, body)
		}
		if filtered := resp.Header.Get("OCI-Filters-Applied") == "artifactType"; filtered != strings.Contains(query, "artifactType") {
			t.Fatalf("referrers %s: OCI-Filters-Applied %q", query, resp.Header.Get("OCI-Filters-Applied"))
		}
		if len(idx.Manifests) != len(want) {
			t.Fatalf("referrers %s: %d, want %d: %s", query, len(idx.Manifests), len(want), body)
		}
		for i, d := range idx.Manifests {
			if d.Digest != want[i].Digest || d.ArtifactType != want[i].ArtifactType || d.Size != want[i].Size {
				t.Fatalf("referrers %s: %+v, want %+v", query, d, want[i])
			}
		}
	}
	list("", referrers...)
	if logs, _ := os.ReadFile(n.shoal.Proc.LogPath); !bytes.Contains(logs, []byte("referrers from the referrers tag schema")) {
		t.Fatalf("distribution 2.8 has no referrers API, yet the log does not say the tag schema answered:\n%s", n.shoal.Proc.Tail(20))
	}
	list("artifactType="+url.QueryEscape(sig)+"&", referrers[1])
	list("artifactType=application/vnd.none&")
	if resp, body := get(http.MethodHead, "/v2/e2e/signed/referrers/"+subject.Digest.String()+"?ns="+smokeHost); resp.StatusCode != 200 || len(body) != 0 {
		t.Fatalf("HEAD referrers: %s", resp.Status)
	}
	// Nothing refers to the signature: an empty index.
	resp, body := get(http.MethodGet, "/v2/e2e/signed/referrers/"+referrers[0].Digest.String()+"?ns="+smokeHost)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"manifests":[]`) {
		t.Fatalf("referrers of a leaf: %s %s", resp.Status, body)
	}
	// What it lists comes through the normal chain, by digest.
	resp, body = get(http.MethodGet, "/v2/e2e/signed/manifests/"+referrers[1].Digest.String()+"?ns="+smokeHost)
	if resp.StatusCode != 200 || digest.FromBytes(body) != referrers[1].Digest {
		t.Fatalf("referrer manifest: %s, digest %s", resp.Status, digest.FromBytes(body))
	}
	// Errors are the spec's JSON, 404 for a miss; never a 401/403 or 429.
	for path, status := range map[string]int{
		"/v2/e2e/signed/referrers/sha256:abc?ns=" + smokeHost:                                     400,
		"/v2/e2e/signed/referrers/" + subject.Digest.String():                                     404,
		"/v2/e2e/signed/referrers/" + subject.Digest.String() + "?artifactType=x&ns=" + smokeHost: 400,
		"/v2/e2e/signed/referrers/" + subject.Digest.String() + "?ns=10.0.0.1":                    404, // refused, never dialled
		"/v2/e2e/signed/tags/list?n=x&ns=" + smokeHost:                                            400,
		"/v2/e2e/nothing/tags/list?ns=" + smokeHost:                                               404,
	} {
		resp, body := get(http.MethodGet, path)
		var e struct{ Errors []struct{ Code string } }
		if resp.StatusCode != status || json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 {
			t.Errorf("%s: %s %s, want %d with a spec error", path, resp.Status, body, status)
		}
	}
}
