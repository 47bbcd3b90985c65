package registry

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/limits"
	"github.com/shoalproject/shoal/pkg/metrics"
	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// origin is a minimal upstream registry on loopback: it serves fixed blobs and
// manifests, and can be told to corrupt blob bodies or answer a fixed status.
type origin struct {
	blobs     map[digest.Digest][]byte
	manifests map[string][]byte // by tag and by digest
	corrupt   atomic.Bool
	empty     atomic.Bool // blobs answered 200 with Content-Length: 0
	status    atomic.Int32
	hits      atomic.Int32
	accept    atomic.Value // []string: the Accept values of the last manifest request
	// hold, when set, makes blob bodies stop half-way until it is closed.
	hold chan struct{}
}

func (o *origin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	o.hits.Add(1)
	if s := o.status.Load(); s != 0 {
		w.WriteHeader(int(s))
		return
	}
	parts := strings.Split(r.URL.Path, "/")
	ref := parts[len(parts)-1]
	switch parts[len(parts)-2] {
	case "manifests":
		o.accept.Store(r.Header.Values("Accept"))
		b, ok := o.manifests[ref]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", ocispec.MediaTypeImageManifest)
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(b).String())
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		if r.Method != http.MethodHead {
			w.Write(b)
		}
	case "blobs":
		b, ok := o.blobs[digest.Digest(ref)]
		if !ok {
			http.NotFound(w, r)
			return
		}
		if o.empty.Load() {
			w.Header().Set("Content-Length", "0")
			w.WriteHeader(200)
			return
		}
		if o.corrupt.Load() {
			b = bytes.Clone(b)
			b[len(b)-10] ^= 1
		}
		if o.hold != nil && r.Header.Get("Range") == "" {
			w.Header().Set("Content-Length", fmt.Sprint(len(b)))
			w.Write(b[:len(b)/2])
			w.(http.Flusher).Flush()
			<-o.hold
			w.Write(b[len(b)/2:])
			return
		}
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(b))
	default:
		http.NotFound(w, r)
	}
}

type fixture struct {
	spool      string // the transfers' spool directory
	srv        *httptest.Server
	origin     *origin
	metrics    *metrics.Metrics
	contentDir string
	local      []byte // a blob in the node's own store
	localD     digest.Digest
	remote     []byte // a blob only the origin has
	remoteD    digest.Digest
	unpulled   digest.Digest // another origin-only blob that no test fetches
	manifest   []byte
	manifestD  digest.Digest
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// fixtureOption adjusts the chain's and the handler's configuration before
// they are built.
type fixtureOption func(*mirror.Config, *Config)

func newFixture(t *testing.T, opts ...fixtureOption) *fixture {
	t.Helper()
	f := &fixture{origin: &origin{blobs: map[digest.Digest][]byte{}, manifests: map[string][]byte{}}}
	f.local, f.remote = randBytes(1<<20+3), randBytes(3<<20+7)
	f.localD, f.remoteD = digest.FromBytes(f.local), digest.FromBytes(f.remote)
	f.manifest, _ = json.Marshal(ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: f.remoteD, Size: int64(len(f.remote))},
	})
	f.manifestD = digest.FromBytes(f.manifest)
	f.origin.blobs[f.remoteD] = f.remote
	unpulled := randBytes(1000)
	f.unpulled = digest.FromBytes(unpulled)
	f.origin.blobs[f.unpulled] = unpulled
	f.origin.manifests["v1"] = f.manifest
	f.origin.manifests[f.manifestD.String()] = f.manifest
	up := httptest.NewServer(f.origin)
	t.Cleanup(up.Close)

	// The real store, reading a content directory laid out like containerd's;
	// no containerd answers on the socket, which is also what a node sees
	// while containerd restarts.
	f.contentDir = t.TempDir()
	blobDir := filepath.Join(f.contentDir, "blobs", "sha256")
	os.MkdirAll(blobDir, 0o755)
	os.WriteFile(filepath.Join(blobDir, f.localD.Encoded()), f.local, 0o644)
	st, err := store.New(store.Config{Socket: filepath.Join(t.TempDir(), "none.sock"), Namespace: "k8s.io",
		ContentDir: f.contentDir, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	client, err := upstream.New(upstream.Config{Upstreams: map[string]string{"registry.shoal.test": up.URL}})
	if err != nil {
		t.Fatal(err)
	}
	f.spool = t.TempDir()
	transfers, err := inflight.New(inflight.Config{Dir: f.spool, Limits: limits.Limits{Linger: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(transfers.Close)
	f.metrics = metrics.New()
	mcfg := mirror.Config{Local: st, Upstream: client, Transfers: transfers}
	rcfg := Config{Metrics: f.metrics}
	for _, opt := range opts {
		opt(&mcfg, &rcfg)
	}
	rcfg.Mirror = mirror.New(mcfg)
	f.srv = httptest.NewServer(New(rcfg))
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fixture) do(t *testing.T, method, path string, hdr ...string) (*http.Response, []byte, error) {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp, body, err
}

const ns = "?ns=registry.shoal.test"

func TestResponses(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("a", 256)
	tests := []struct {
		name, method, path string
		hdr                []string
		status             int
		body               func() []byte
		headers            map[string]string
		errCode            string
	}{
		{name: "base", method: "GET", path: "/v2/", status: 200, body: func() []byte { return []byte("{}") },
			headers: map[string]string{"Docker-Distribution-API-Version": "registry/2.0"}},
		{name: "local blob", method: "GET", path: "/v2/any/name/blobs/" + f.localD.String(), status: 200,
			body: func() []byte { return f.local },
			headers: map[string]string{"Docker-Content-Digest": f.localD.String(), "Accept-Ranges": "bytes",
				"Content-Length": fmt.Sprint(len(f.local)), "Content-Type": "application/octet-stream", "OCI-Namespace": ""}},
		{name: "local blob with ns", method: "GET", path: "/v2/a/blobs/" + f.localD.String() + "?ns=Docker.IO", status: 200,
			body: func() []byte { return f.local }, headers: map[string]string{"OCI-Namespace": "docker.io"}},
		{name: "local blob HEAD", method: "HEAD", path: "/v2/a/blobs/" + f.localD.String(), status: 200,
			body: func() []byte { return nil }, headers: map[string]string{"Content-Length": fmt.Sprint(len(f.local))}},
		{name: "upstream blob", method: "GET", path: "/v2/r/blobs/" + f.remoteD.String() + ns, status: 200,
			body:    func() []byte { return f.remote },
			headers: map[string]string{"OCI-Namespace": "registry.shoal.test", "Content-Length": fmt.Sprint(len(f.remote))}},
		{name: "upstream blob HEAD", method: "HEAD", path: "/v2/r/blobs/" + f.remoteD.String() + ns, status: 200,
			headers: map[string]string{"Content-Length": fmt.Sprint(len(f.remote))}},
		{name: "manifest by tag", method: "GET", path: "/v2/r/manifests/v1" + ns, status: 200,
			body:    func() []byte { return f.manifest },
			headers: map[string]string{"Content-Type": ocispec.MediaTypeImageManifest, "Docker-Content-Digest": f.manifestD.String()}},
		{name: "manifest by tag HEAD", method: "HEAD", path: "/v2/r/manifests/v1" + ns, status: 200,
			headers: map[string]string{"Content-Length": fmt.Sprint(len(f.manifest)), "Docker-Content-Digest": f.manifestD.String()}},
		{name: "manifest by digest", method: "GET", path: "/v2/r/manifests/" + f.manifestD.String() + ns, status: 200,
			body: func() []byte { return f.manifest }},
		{name: "layer is not a manifest", method: "GET", path: "/v2/r/manifests/" + f.localD.String(), status: 404, errCode: "MANIFEST_UNKNOWN"},
		{name: "tag without ns", method: "GET", path: "/v2/r/manifests/v1", status: 404, errCode: "MANIFEST_UNKNOWN"},
		{name: "unknown tag", method: "GET", path: "/v2/r/manifests/nope" + ns, status: 404, errCode: "MANIFEST_UNKNOWN"},
		{name: "blob miss without ns", method: "GET", path: "/v2/r/blobs/" + f.unpulled.String(), status: 404, errCode: "BLOB_UNKNOWN"},
		{name: "blob miss HEAD", method: "HEAD", path: "/v2/r/blobs/" + digest.FromString("x").String() + ns, status: 404},
		{name: "unlisted loopback ns", method: "GET", path: "/v2/r/blobs/" + f.unpulled.String() + "?ns=127.0.0.1:5000", status: 404, errCode: "BLOB_UNKNOWN"},
		{name: "link-local ns", method: "GET", path: "/v2/r/blobs/" + f.unpulled.String() + "?ns=169.254.169.254", status: 404, errCode: "BLOB_UNKNOWN"},
		{name: "link-local ns serves local", method: "GET", path: "/v2/r/blobs/" + f.localD.String() + "?ns=169.254.169.254", status: 200,
			body: func() []byte { return f.local }},
		{name: "garbage ns", method: "GET", path: "/v2/r/blobs/" + f.localD.String() + "?ns=a%20b/c", status: 400, errCode: "NAME_INVALID"},
		{name: "two ns", method: "GET", path: "/v2/r/blobs/" + f.localD.String() + "?ns=a&ns=b", status: 400, errCode: "NAME_INVALID"},
		{name: "dotdot", method: "GET", path: "/v2/../r/blobs/" + f.localD.String(), status: 400, errCode: "NAME_INVALID"},
		{name: "encoded dotdot", method: "GET", path: "/v2/r/%2e%2e/blobs/" + f.localD.String(), status: 400, errCode: "NAME_INVALID"},
		{name: "malformed digest", method: "GET", path: "/v2/r/blobs/sha256:1234", status: 400, errCode: "DIGEST_INVALID"},
		{name: "unknown algorithm", method: "GET", path: "/v2/r/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", status: 400, errCode: "DIGEST_INVALID"},
		{name: "long name", method: "GET", path: "/v2/" + long + "/manifests/v1" + ns, status: 400, errCode: "NAME_INVALID"},
		{name: "ns plus name too long", method: "GET", path: "/v2/" + strings.Repeat("a", 250) + "/manifests/v1" + ns, status: 400, errCode: "NAME_INVALID"},
		{name: "bad tag", method: "GET", path: "/v2/r/manifests/-x" + ns, status: 400, errCode: "MANIFEST_INVALID"},
		{name: "push refused", method: "POST", path: "/v2/r/blobs/uploads/", status: 405, errCode: "UNSUPPORTED"},
		{name: "tags list not configured", method: "GET", path: "/v2/r/tags/list" + ns, status: 404, errCode: "UNSUPPORTED"},
		{name: "catalog unsupported", method: "GET", path: "/v2/_catalog", status: 404, errCode: "UNSUPPORTED"},
		{name: "Accept too long", method: "GET", path: "/v2/r/manifests/v1" + ns, hdr: []string{"Accept", strings.Repeat("a/b, ", 2000)},
			status: 400, errCode: "UNSUPPORTED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, body, err := f.do(t, tt.method, tt.path, tt.hdr...)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d, want %d; body %.200s", resp.StatusCode, tt.status, body)
			}
			if tt.body != nil && !bytes.Equal(body, tt.body()) {
				t.Fatalf("body: %d bytes, want %d", len(body), len(tt.body()))
			}
			for k, v := range tt.headers {
				if got := resp.Header.Get(k); got != v {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
			if tt.errCode != "" {
				var e struct {
					Errors []struct{ Code, Message string }
				}
				if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != tt.errCode {
					t.Fatalf("error body %.200s, want code %s", body, tt.errCode)
				}
				if resp.Header.Get("Content-Type") != "application/json" {
					t.Errorf("error Content-Type %q", resp.Header.Get("Content-Type"))
				}
			}
		})
	}
}

// A blob the node is fetching is the node's own content: verified bytes,
// served to any request for that digest, ns or not, from the same transfer.
func TestTransferServesAnyRequest(t *testing.T) {
	f := newFixture(t)
	f.origin.hold = make(chan struct{})
	type result struct {
		status int
		body   []byte
		err    error
	}
	get := func(path string) <-chan result {
		ch := make(chan result, 1)
		go func() {
			resp, body, err := f.do(t, "GET", path)
			if err != nil {
				ch <- result{err: err}
				return
			}
			ch <- result{resp.StatusCode, body, nil}
		}()
		return ch
	}
	first := get("/v2/r/blobs/" + f.remoteD.String() + ns)
	// The upstream has sent half the blob and waits: the transfer is in flight.
	for f.origin.hits.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	second := get("/v2/other/name/blobs/" + f.remoteD.String())
	time.Sleep(50 * time.Millisecond)
	close(f.origin.hold)
	for i, ch := range []<-chan result{first, second} {
		r := <-ch
		if r.err != nil || r.status != 200 || !bytes.Equal(r.body, f.remote) {
			t.Fatalf("request %d: status %d, %d bytes, %v: %.300s", i+1, r.status, len(r.body), r.err, r.body)
		}
	}
	if hits := f.origin.hits.Load(); hits != 1 {
		t.Fatalf("the upstream was asked %d times, want once", hits)
	}
}

func TestRange(t *testing.T) {
	f := newFixture(t)
	for _, which := range []struct {
		name string
		data []byte
		path string
	}{
		{"local", f.local, "/v2/r/blobs/" + f.localD.String()},
		{"upstream", f.remote, "/v2/r/blobs/" + f.remoteD.String() + ns},
	} {
		n := len(which.data)
		tests := []struct {
			rng          string
			status       int
			from, to     int // expected body = data[from:to]
			contentRange string
		}{
			{"bytes=0-0", 206, 0, 1, fmt.Sprintf("bytes 0-0/%d", n)},
			{"bytes=10-19", 206, 10, 20, fmt.Sprintf("bytes 10-19/%d", n)},
			{"bytes=100-", 206, 100, n, fmt.Sprintf("bytes 100-%d/%d", n-1, n)},
			{"bytes=-5", 206, n - 5, n, fmt.Sprintf("bytes %d-%d/%d", n-5, n-1, n)},
			{fmt.Sprintf("bytes=%d-", n-1), 206, n - 1, n, fmt.Sprintf("bytes %d-%d/%d", n-1, n-1, n)},
			{fmt.Sprintf("bytes=0-%d", n+100), 206, 0, n, fmt.Sprintf("bytes 0-%d/%d", n-1, n)},
			{fmt.Sprintf("bytes=%d-", n), 416, 0, 0, fmt.Sprintf("bytes */%d", n)},
			{"bytes=0-1,5-6", 200, 0, n, ""}, // multi-range: answered in full
			{"", 200, 0, n, ""},
		}
		for _, tt := range tests {
			t.Run(which.name+"/"+tt.rng, func(t *testing.T) {
				resp, body, err := f.do(t, "GET", which.path, "Range", tt.rng)
				if err != nil {
					t.Fatal(err)
				}
				if resp.StatusCode != tt.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, tt.status)
				}
				if got := resp.Header.Get("Content-Range"); got != tt.contentRange {
					t.Errorf("Content-Range %q, want %q", got, tt.contentRange)
				}
				if tt.status != 416 && !bytes.Equal(body, which.data[tt.from:tt.to]) {
					t.Errorf("body %d bytes, want %d", len(body), tt.to-tt.from)
				}
			})
		}
	}
}

// A corrupt upstream must never yield a complete body: the client sees the
// connection fail, or a plain 404 when the mismatch was found before a byte
// was sent; and a fresh request fetches again (nothing bad was kept).
func TestCorruptUpstreamAborts(t *testing.T) {
	f := newFixture(t)
	f.origin.corrupt.Store(true)
	path := "/v2/r/blobs/" + f.remoteD.String() + ns
	for range 4 {
		resp, body, err := f.do(t, "GET", path)
		switch {
		case err != nil:
			if len(body) >= len(f.remote) {
				t.Fatalf("client received all %d bytes of a corrupt blob", len(body))
			}
		case resp.StatusCode != http.StatusNotFound:
			t.Fatalf("corrupt body ended cleanly: status %d, %d bytes", resp.StatusCode, len(body))
		}
	}
	f.origin.corrupt.Store(false)
	resp, body, err := f.do(t, "GET", path)
	if err != nil || resp.StatusCode != 200 || !bytes.Equal(body, f.remote) {
		t.Fatalf("after repair: %v", err)
	}
}

// The upstream's answers never become 408 or 429, and 401/403 become 404.
func TestUpstreamStatusMapping(t *testing.T) {
	f := newFixture(t)
	for _, st := range []int{401, 403, 404, 408, 429, 500, 502, 503} {
		f.origin.status.Store(int32(st))
		for _, p := range []string{"/v2/r/blobs/" + f.remoteD.String() + ns, "/v2/r/manifests/v1" + ns, "/v2/r/manifests/" + f.manifestD.String() + ns} {
			resp, _, err := f.do(t, "GET", p)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 404 {
				t.Errorf("upstream %d on %s: mirror answered %d, want 404", st, p, resp.StatusCode)
			}
		}
	}
}

func TestMetricsBySource(t *testing.T) {
	f := newFixture(t)
	f.do(t, "GET", "/v2/r/blobs/"+f.localD.String())
	f.do(t, "GET", "/v2/r/blobs/"+f.remoteD.String()+ns)
	f.do(t, "GET", "/v2/r/blobs/"+digest.FromString("nope").String())
	m := f.metrics
	checks := []struct {
		name string
		c    prometheus.Collector
		want float64
	}{
		{"served local", m.ServedBytes.WithLabelValues("local"), float64(len(f.local))},
		{"served upstream", m.ServedBytes.WithLabelValues("upstream"), float64(len(f.remote))},
		{"requests local", m.Requests.WithLabelValues("blob", "local", "200"), 1},
		{"requests upstream", m.Requests.WithLabelValues("blob", "upstream", "200"), 1},
		{"requests miss", m.Requests.WithLabelValues("blob", "none", "404"), 1},
	}
	for _, c := range checks {
		// A handler accounts after its last byte, which the client may see first.
		deadline := time.Now().Add(2 * time.Second)
		for testutil.ToFloat64(c.c) != c.want && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%s = %v, want %v", c.name, got, c.want)
		}
	}
}

// An upstream that claims a blob is empty must not produce a clean, empty 200:
// nothing is served before the bytes are proven.
func TestUpstreamEmptyBody(t *testing.T) {
	f := newFixture(t)
	f.origin.empty.Store(true)
	resp, body, err := f.do(t, "GET", "/v2/r/blobs/"+f.unpulled.String()+ns)
	if err == nil && resp.StatusCode == 200 {
		t.Fatalf("clean 200 with %d bytes for a blob the upstream claimed was empty", len(body))
	}
}

// The client's Accept list goes upstream as it came, by tag and by digest,
// so that a registry that negotiates answers as it would the client; without
// one, Shoal's own list.
func TestManifestAcceptForwarded(t *testing.T) {
	f := newFixture(t)
	containerd := []string{"application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json, */*"}
	two := []string{ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex + ";q=0.5"}
	for _, tt := range []struct {
		path string
		sent []string
	}{
		{"/v2/r/manifests/v1" + ns, containerd},
		{"/v2/r/manifests/v1" + ns, two},
		{"/v2/r/manifests/" + f.manifestD.String() + ns, two},
		{"/v2/r/manifests/v1" + ns, nil},
	} {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+tt.path, nil)
		req.Header["Accept"] = tt.sent
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		got, _ := f.origin.accept.Load().([]string)
		switch {
		case resp.StatusCode != 200:
			t.Fatalf("%s: %s", tt.path, resp.Status)
		case tt.sent != nil && !slices.Equal(got, tt.sent):
			t.Errorf("%s: upstream got Accept %q, want %q", tt.path, got, tt.sent)
		case tt.sent == nil && (len(got) != 1 || !strings.Contains(got[0], ocispec.MediaTypeImageIndex)):
			t.Errorf("%s: without the client's Accept, upstream got %q", tt.path, got)
		}
	}
}
