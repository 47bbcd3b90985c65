package upstream

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// fakeRegistry is a minimal distribution-spec registry on 127.0.0.1 with a
// token endpoint at /token, and knobs for the failure modes under test.
type fakeRegistry struct {
	srv *httptest.Server

	mu        sync.Mutex
	manifests map[string]fakeManifest // "name:tag" and "name@digest"
	blobs     map[digest.Digest][]byte
	tokens    map[string]bool // issued and still honoured
	lastReq   *http.Request   // headers of the last /v2 request
	scopes    []string        // scope and service seen by /token
	unauth    int             // 401 answers given
	reqs      []string        // "METHOD path" of every /v2 request

	k knobs // guarded by mu

	tokenHits atomic.Int64
	v2Hits    atomic.Int64
}

// knobs select the failure modes under test.
type knobs struct {
	auth          string // "", "bearer", "basic", "forbidden", "reject-tokens"
	status        int    // answer every /v2 request with this status
	slow          bool   // block /v2 requests until the client gives up
	headNoDigest  bool   // HEAD on manifests omits Docker-Content-Digest
	genericType   bool   // manifests served as application/json
	serveWrong    bool   // manifest by digest returns other bytes
	ignoreRange   bool   // answer ranged blob requests with 200
	shortBody     bool   // blob Content-Length larger than the body
	short206      bool   // chunked 206 that ends early
	badRangeStart bool   // 206 whose Content-Range starts elsewhere
	redirectTo    string // blob requests redirect to this base URL
	tokenStatus   int    // /token answers this status instead
	tokenBody     string // /token answers this body instead
	tokenTTL      int    // expires_in; omitted when negative
	accessToken   bool   // send access_token instead of token
	tokenDelay    time.Duration
	scope         string // the challenge's scope, with %s for the name; "" is repository:%s:pull
	realm         string // the challenge's realm; "" is this registry's /token
}

type fakeManifest struct {
	body      []byte
	mediaType string
}

func newFakeRegistry(t *testing.T) *fakeRegistry {
	t.Helper()
	r := &fakeRegistry{
		manifests: map[string]fakeManifest{},
		blobs:     map[digest.Digest][]byte{},
		tokens:    map[string]bool{},
		k:         knobs{tokenTTL: 300},
	}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *fakeRegistry) addManifest(name, tag string, body []byte, mt string) digest.Digest {
	d := digest.FromBytes(body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.manifests[name+":"+tag] = fakeManifest{body, mt}
	r.manifests[name+"@"+d.String()] = fakeManifest{body, mt}
	return d
}

func (r *fakeRegistry) addBlob(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	r.mu.Lock()
	r.blobs[d] = b
	r.mu.Unlock()
	return d
}

func (r *fakeRegistry) set(f func(k *knobs)) {
	r.mu.Lock()
	f(&r.k)
	r.mu.Unlock()
}

// observed is what the registry saw so far.
type observed struct {
	lastReq *http.Request
	scopes  []string
	unauth  int
	reqs    []string
}

func (r *fakeRegistry) seen() observed {
	r.mu.Lock()
	defer r.mu.Unlock()
	return observed{r.lastReq, append([]string(nil), r.scopes...), r.unauth, append([]string(nil), r.reqs...)}
}

func (r *fakeRegistry) revokeTokens() {
	r.mu.Lock()
	clear(r.tokens)
	r.mu.Unlock()
}

func (r *fakeRegistry) serve(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path == "/token" {
		r.serveToken(w, req)
		return
	}
	if p, ok := strings.CutPrefix(req.URL.Path, "/storage"); ok {
		// Blob storage on the registry's own host, where redirects may point.
		ref := p[strings.LastIndexByte(p, '/')+1:]
		r.serveBlob(w, req, ref, knobs{})
		return
	}
	r.v2Hits.Add(1)
	r.mu.Lock()
	r.lastReq = req.Clone(context.Background())
	r.reqs = append(r.reqs, req.Method+" "+req.URL.Path)
	k := r.k // snapshot
	r.mu.Unlock()

	if k.slow {
		select {
		case <-req.Context().Done():
		case <-time.After(10 * time.Second):
		}
		return
	}
	if k.status != 0 {
		w.WriteHeader(k.status)
		return
	}
	name, kind, ref, ok := splitV2(req.URL.Path)
	if !ok {
		http.NotFound(w, req)
		return
	}
	if !r.authorized(w, req, name, k) {
		return
	}
	switch kind {
	case "manifests":
		r.serveManifest(w, req, name, ref, k)
	case "blobs":
		r.serveBlob(w, req, ref, k)
	}
}

func (r *fakeRegistry) authorized(w http.ResponseWriter, req *http.Request, name string, k knobs) bool {
	switch mode := k.auth; mode {
	case "":
		return true
	case "forbidden":
		w.WriteHeader(http.StatusForbidden)
		return false
	case "basic":
		w.Header().Set("WWW-Authenticate", `Basic realm="fake"`)
	case "bearer", "reject-tokens":
		tok, _ := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer ")
		r.mu.Lock()
		valid := r.tokens[tok]
		r.mu.Unlock()
		if valid && mode == "bearer" {
			return true
		}
		scope, realm := "repository:%s:pull", r.srv.URL+"/token"
		if k.scope != "" {
			scope = k.scope
		}
		if k.realm != "" {
			realm = k.realm
		}
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s",service="fake",scope="%s"`, realm, fmt.Sprintf(scope, name)))
	}
	r.mu.Lock()
	r.unauth++
	r.mu.Unlock()
	w.WriteHeader(http.StatusUnauthorized)
	return false
}

func (r *fakeRegistry) serveToken(w http.ResponseWriter, req *http.Request) {
	n := r.tokenHits.Add(1)
	r.mu.Lock()
	r.scopes = append(r.scopes, req.URL.Query().Get("service")+" "+req.URL.Query().Get("scope"))
	k := r.k
	r.mu.Unlock()
	time.Sleep(k.tokenDelay)
	if k.tokenStatus != 0 {
		w.WriteHeader(k.tokenStatus)
		return
	}
	if k.tokenBody != "" {
		_, _ = io.WriteString(w, k.tokenBody)
		return
	}
	tok := fmt.Sprintf("tok-%d", n)
	r.mu.Lock()
	r.tokens[tok] = true
	r.mu.Unlock()
	resp := map[string]any{"token": tok}
	if k.accessToken {
		resp = map[string]any{"access_token": tok}
	}
	if k.tokenTTL >= 0 {
		resp["expires_in"] = k.tokenTTL
	}
	_ = json.NewEncoder(w).Encode(resp)
}

func (r *fakeRegistry) serveManifest(w http.ResponseWriter, req *http.Request, name, ref string, k knobs) {
	sep := ":"
	if strings.Contains(ref, ":") {
		sep = "@"
	}
	r.mu.Lock()
	m, ok := r.manifests[name+sep+ref]
	r.mu.Unlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	body := m.body
	if k.serveWrong && sep == "@" {
		body = append([]byte("tampered "), body...)
	}
	mt := m.mediaType
	if k.genericType {
		mt = "application/json"
	}
	w.Header().Set("Content-Type", mt)
	w.Header().Set("Content-Length", fmt.Sprint(len(body)))
	if !(k.headNoDigest && req.Method == http.MethodHead) {
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.body).String())
	}
	if req.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

func (r *fakeRegistry) serveBlob(w http.ResponseWriter, req *http.Request, ref string, k knobs) {
	if k.redirectTo != "" {
		http.Redirect(w, req, k.redirectTo+req.URL.Path, http.StatusTemporaryRedirect)
		return
	}
	r.mu.Lock()
	b, ok := r.blobs[digest.Digest(ref)]
	r.mu.Unlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	w.Header().Set("Docker-Content-Digest", ref)
	var off int64
	_, _ = fmt.Sscanf(req.Header.Get("Range"), "bytes=%d-", &off)
	switch {
	case k.shortBody:
		w.Header().Set("Content-Length", fmt.Sprint(len(b)+10))
		_, _ = w.Write(b)
	case k.short206:
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off, len(b)-1, len(b)))
		w.WriteHeader(http.StatusPartialContent)
		w.(http.Flusher).Flush() // chunked: the body can end cleanly
		_, _ = w.Write(b[off : len(b)-3])
	case k.badRangeStart && off > 0:
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", off-1, len(b)-1, len(b)))
		w.WriteHeader(http.StatusPartialContent)
		_, _ = w.Write(b[off-1:])
	default:
		if k.ignoreRange {
			req.Header.Del("Range")
		}
		http.ServeContent(w, req, "", time.Time{}, strings.NewReader(string(b)))
	}
}

// splitV2 splits /v2/<name>/(manifests|blobs)/<ref>.
func splitV2(p string) (name, kind, ref string, ok bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", "", false
	}
	for _, kind := range []string{"manifests", "blobs"} {
		if i := strings.LastIndex(rest, "/"+kind+"/"); i > 0 {
			return rest[:i], kind, rest[i+len(kind)+2:], true
		}
	}
	return "", "", "", false
}

const testNS = "registry.shoal.test"

// newTestClient returns a client with the fake registry listed as testNS. Its
// resolver fails the test if called unless mutate installs another: these
// tests never use real DNS.
func newTestClient(t *testing.T, r *fakeRegistry, mutate func(*Config)) *Client {
	t.Helper()
	cfg := Config{
		Upstreams: map[string]string{testNS: r.srv.URL},
		LookupIPAddr: func(_ context.Context, host string) ([]net.IPAddr, error) {
			t.Errorf("unexpected DNS lookup of %q", host)
			return nil, fmt.Errorf("no DNS in tests")
		},
		Logger:    slog.New(slog.DiscardHandler),
		UserAgent: "shoal-test",
	}
	if mutate != nil {
		mutate(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func testManifest(t *testing.T) ([]byte, string) {
	t.Helper()
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromString("config"), Size: 6},
	}
	m.SchemaVersion = 2
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b, ocispec.MediaTypeImageManifest
}
