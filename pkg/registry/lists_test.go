package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/upstream"
)

// front stands before go-containerregistry's in-memory registry and adds
// what a test needs that it lacks or must vary: distribution's Link header
// on a full page of tags, artifactType filtering with OCI-Filters-Applied,
// token auth, 403, a fixed status. It records the requests it sees.
type front struct {
	inner http.Handler

	mu        sync.Mutex
	paginate  string // "", "relative", "absolute", "elsewhere"
	filter    bool
	auth      string // "", "bearer", "forbidden", "basic"
	status    int
	requests  []*http.Request
	tokenHits int
}

func (f *front) set(fn func(*front)) {
	f.mu.Lock()
	fn(f)
	f.mu.Unlock()
}

func (f *front) seen() []*http.Request {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.requests)
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	paginate, filter, auth, status := f.paginate, f.filter, f.auth, f.status
	if r.URL.Path == "/token" {
		f.tokenHits++
		f.mu.Unlock()
		json.NewEncoder(w).Encode(map[string]any{"token": "t0k", "expires_in": 300})
		return
	}
	if r.Method != http.MethodPut { // the test's own pushes are not the mirror's
		f.requests = append(f.requests, r.Clone(context.Background()))
	}
	f.mu.Unlock()

	switch {
	case status != 0:
		w.WriteHeader(status)
		return
	case auth == "forbidden":
		w.WriteHeader(http.StatusForbidden)
		return
	case auth == "basic":
		w.Header().Set("WWW-Authenticate", `Basic realm="front"`)
		w.WriteHeader(http.StatusUnauthorized)
		return
	case auth == "bearer" && r.Header.Get("Authorization") != "Bearer t0k":
		w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="http://%s/token",service="front"`, r.Host))
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	rec := httptest.NewRecorder()
	f.inner.ServeHTTP(rec, r)
	body := rec.Body.Bytes()
	h := w.Header()
	for k, v := range rec.Header() {
		h[k] = v
	}
	q := r.URL.Query()
	switch {
	case strings.HasSuffix(r.URL.Path, "/tags/list") && paginate != "" && rec.Code == 200 && q.Get("n") != "":
		var tl tagList
		json.Unmarshal(body, &tl)
		if n, _ := strconv.Atoi(q.Get("n")); n > 0 && len(tl.Tags) == n {
			next := r.URL.Path + "?" + url.Values{"n": {q.Get("n")}, "last": {tl.Tags[n-1]}}.Encode()
			switch paginate {
			case "absolute":
				next = "http://" + r.Host + next
			case "elsewhere":
				next = "http://elsewhere.example" + next
			}
			h.Set("Link", `<`+next+`>; rel="next"`)
		}
	case strings.Contains(r.URL.Path, "/referrers/") && filter && q.Get("artifactType") != "" && rec.Code == 200:
		var idx ocispec.Index
		json.Unmarshal(body, &idx)
		idx.Manifests = slices.DeleteFunc(idx.Manifests, func(d ocispec.Descriptor) bool { return d.ArtifactType != q.Get("artifactType") })
		body, _ = json.Marshal(idx)
		h.Set("OCI-Filters-Applied", "artifactType")
	}
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(rec.Code)
	w.Write(body)
}

// localTags is the node's image store as the handler sees it: a fixed map.
type localTags map[string][]string

func (l localTags) Tags(_ context.Context, registry, name string) ([]string, error) {
	tags, ok := l[registry+"/"+name]
	if !ok {
		return nil, errors.New("no such image")
	}
	return tags, nil
}

type listFixture struct {
	srv   *httptest.Server // the mirror
	front *front
	up    *httptest.Server // the upstream
	logs  *bytes.Buffer
}

const (
	listNS = "registry.shoal.test"
	downNS = "down.shoal.test" // nothing listens there
)

func newListFixture(t *testing.T, referrers bool, local localTags) *listFixture {
	t.Helper()
	f := &listFixture{front: &front{inner: ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)), ggcr.WithReferrersSupport(referrers))}}
	f.up = httptest.NewServer(f.front)
	t.Cleanup(f.up.Close)
	closed := httptest.NewServer(http.NotFoundHandler())
	closed.Close()
	client, err := upstream.New(upstream.Config{Upstreams: map[string]string{listNS: f.up.URL, downNS: closed.URL},
		Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(client.CloseIdleConnections)
	f.logs = &bytes.Buffer{}
	var lt LocalTags
	if local != nil {
		lt = local
	}
	f.srv = httptest.NewServer(New(Config{Lists: client, LocalTags: lt,
		Logger: slog.New(slog.NewTextHandler(&syncWriter{w: f.logs}, nil))}))
	t.Cleanup(f.srv.Close)
	return f
}

type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(b []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(b)
}

// push stores a manifest in the upstream, straight into the registry.
func (f *listFixture) push(t *testing.T, name, ref, mediaType string, body []byte) digest.Digest {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, f.up.URL+"/v2/"+name+"/manifests/"+ref, bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push %s:%s: %s", name, ref, resp.Status)
	}
	return digest.FromBytes(body)
}

func (f *listFixture) get(t *testing.T, method, path string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, f.srv.URL+path, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// mustError checks a spec JSON error body with status and code.
func mustError(t *testing.T, what string, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if resp.StatusCode != status || json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != code {
		t.Fatalf("%s: %s %s, want %d %s", what, resp.Status, body, status, code)
	}
}

func imageManifest(t *testing.T, configType string, subject *ocispec.Descriptor, annotations map[string]string) []byte {
	t.Helper()
	m := ocispec.Manifest{
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: configType, Digest: digest.FromString(configType), Size: int64(len(configType))},
		Layers:    []ocispec.Descriptor{},
		Subject:   subject,
	}
	if configType != ocispec.MediaTypeImageConfig {
		m.ArtifactType = configType
	}
	m.SchemaVersion = 2
	m.Annotations = annotations
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestTagsPagination(t *testing.T) {
	for _, style := range []string{"relative", "absolute"} {
		t.Run(style, func(t *testing.T) {
			f := newListFixture(t, true, nil)
			f.front.set(func(f *front) { f.paginate = style })
			want := []string{"a", "b", "c", "d", "e"}
			for _, tag := range want {
				f.push(t, "team/app", tag, ocispec.MediaTypeImageManifest, imageManifest(t, ocispec.MediaTypeImageConfig, nil, map[string]string{"tag": tag}))
			}
			// Follow the Link exactly as a client does: it must stay on the
			// mirror and keep ns.
			var got []string
			next := "/v2/team/app/tags/list?n=2&ns=" + listNS
			for pages := 0; next != ""; pages++ {
				if pages > 5 {
					t.Fatal("pagination does not end")
				}
				resp, body := f.get(t, http.MethodGet, next)
				if resp.StatusCode != 200 || resp.Header.Get(SourceHeader) != "upstream" || resp.Header.Get("OCI-Namespace") != listNS {
					t.Fatalf("GET %s: %s %v %s", next, resp.Status, resp.Header, body)
				}
				var tl tagList
				if err := json.Unmarshal(body, &tl); err != nil || tl.Name != "team/app" {
					t.Fatalf("body %s: %v", body, err)
				}
				got = append(got, tl.Tags...)
				next = ""
				if link := resp.Header.Get("Link"); link != "" {
					u, ok := strings.CutPrefix(link, "<")
					u, rest, _ := strings.Cut(u, ">")
					if !ok || rest != `; rel="next"` || !strings.HasPrefix(u, "/v2/team/app/tags/list?") {
						t.Fatalf("Link %q does not point back at the mirror", link)
					}
					pu, _ := url.Parse(u)
					if pu.Query().Get("ns") != listNS || pu.Query().Get("n") != "2" {
						t.Fatalf("Link %q lost ns or n", link)
					}
					next = u
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("paged tags %v, want %v", got, want)
			}
			// The upstream saw the client's pagination, and never ns.
			var queries []string
			for _, r := range f.front.seen() {
				queries = append(queries, r.URL.RawQuery)
			}
			if !slices.Equal(queries, []string{"n=2", "last=b&n=2", "last=d&n=2"}) {
				t.Fatalf("upstream queries %q", queries)
			}

			// HEAD: the same headers, no body.
			resp, body := f.get(t, http.MethodHead, "/v2/team/app/tags/list?n=2&ns="+listNS)
			if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Link") == "" || resp.Header.Get("Content-Length") == "" {
				t.Fatalf("HEAD: %s %v", resp.Status, resp.Header)
			}
		})
	}
}

func TestTagsLinkElsewhereIsNotFollowed(t *testing.T) {
	f := newListFixture(t, true, localTags{})
	f.front.set(func(f *front) { f.paginate = "elsewhere" })
	for _, tag := range []string{"a", "b", "c"} {
		f.push(t, "app", tag, ocispec.MediaTypeImageManifest, imageManifest(t, ocispec.MediaTypeImageConfig, nil, map[string]string{"tag": tag}))
	}
	// A next page the mirror cannot reach would end the list early without
	// a word: the listing fails instead.
	resp, body := f.get(t, http.MethodGet, "/v2/app/tags/list?n=2&ns="+listNS)
	mustError(t, "Link to another host", resp, body, 404, "NAME_UNKNOWN")
	if !strings.Contains(string(body), "another host") {
		t.Fatalf("error does not say why: %s", body)
	}
}

// errorCase is a request the upstream answers as auth or status say, and
// the error the mirror must answer with.
type errorCase struct {
	name, auth string
	status     int
	path       string
	wantStatus int
	code       string
}

func TestTagsErrors(t *testing.T) {
	f := newListFixture(t, true, localTags{downNS + "/app": {"v1"}, listNS + "/app": {"stale"}})
	f.push(t, "app", "v1", ocispec.MediaTypeImageManifest, imageManifest(t, ocispec.MediaTypeImageConfig, nil, nil))
	for _, tt := range []errorCase{
		{name: "unknown repository", path: "/v2/nope/tags/list?ns=" + listNS, wantStatus: 404, code: "NAME_UNKNOWN"},
		{name: "forbidden", auth: "forbidden", path: "/v2/app/tags/list?ns=" + listNS, wantStatus: 404, code: "NAME_UNKNOWN"},
		{name: "basic auth", auth: "basic", path: "/v2/app/tags/list?ns=" + listNS, wantStatus: 404, code: "NAME_UNKNOWN"},
		// 401/403 and 404 are answers: never replaced by the local store's
		// (stale) list.
		{name: "429 never passed on", status: 429, path: "/v2/app/tags/list?ns=" + listNS, wantStatus: 200},
		{name: "no ns", path: "/v2/app/tags/list", wantStatus: 404, code: "NAME_UNKNOWN"},
		{name: "bad n", path: "/v2/app/tags/list?n=-1&ns=" + listNS, wantStatus: 400, code: "UNSUPPORTED"},
		{name: "n twice", path: "/v2/app/tags/list?n=1&n=2&ns=" + listNS, wantStatus: 400, code: "UNSUPPORTED"},
		{name: "bad escape", path: "/v2/app/tags/list?last=%zz&ns=" + listNS, wantStatus: 400, code: "UNSUPPORTED"},
		{name: "bad name", path: "/v2/App/tags/list?ns=" + listNS, wantStatus: 400, code: "NAME_INVALID"},
		{name: "bad ns", path: "/v2/app/tags/list?ns=a/b", wantStatus: 400, code: "NAME_INVALID"},
		{name: "refused ns", path: "/v2/app/tags/list?ns=127.0.0.1", wantStatus: 404, code: "NAME_UNKNOWN"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f.front.set(func(f *front) { f.auth, f.status = tt.auth, tt.status })
			resp, body := f.get(t, http.MethodGet, tt.path)
			if tt.wantStatus == 200 {
				// A 429 means the upstream is there but will not answer
				// now: unreachable for this request, so the local list
				// answers, and the client never sees a 429.
				if resp.StatusCode != 200 || resp.Header.Get(SourceHeader) != "local" {
					t.Fatalf("%s %s %s", resp.Status, resp.Header, body)
				}
				return
			}
			mustError(t, tt.name, resp, body, tt.wantStatus, tt.code)
			if tt.code == "NAME_UNKNOWN" && resp.Header.Get(SourceHeader) != "" {
				t.Fatalf("an error claims a source: %v", resp.Header)
			}
		})
	}
	// Credentials are asked for with a bearer challenge: the anonymous token
	// is fetched, and the list comes through.
	f.front.set(func(f *front) { f.auth, f.status = "bearer", 0 })
	resp, body := f.get(t, http.MethodGet, "/v2/app/tags/list?ns="+listNS)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"v1"`) || f.front.tokenHits != 1 {
		t.Fatalf("with a token: %s %s (token fetches %d)", resp.Status, body, f.front.tokenHits)
	}
}

func TestTagsUpstreamDown(t *testing.T) {
	local := localTags{downNS + "/team/app": {"1.0", "1.1", "2.0", "latest"}}
	f := newListFixture(t, true, local)
	resp, body := f.get(t, http.MethodGet, "/v2/team/app/tags/list?ns="+downNS)
	if resp.StatusCode != 200 || resp.Header.Get(SourceHeader) != "local" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("upstream down: %s %v %s", resp.Status, resp.Header, body)
	}
	if string(body) != `{"name":"team/app","tags":["1.0","1.1","2.0","latest"]}` {
		t.Fatalf("body %s", body)
	}
	if !strings.Contains(f.logs.String(), "tag list answered from the local image store") {
		t.Fatalf("no log line says where the list came from:\n%s", f.logs)
	}
	// n and last as a registry applies them, with a Link back to the mirror.
	for _, tt := range []struct{ query, body, link string }{
		{"n=2", `["1.0","1.1"]`, "/v2/team/app/tags/list?last=1.1&n=2&ns=" + downNS},
		{"n=2&last=1.1", `["2.0","latest"]`, ""},
		{"last=1.05", `["1.1","2.0","latest"]`, ""},
		{"last=zzz", `[]`, ""},
		{"n=0", `[]`, ""},
	} {
		resp, body := f.get(t, http.MethodGet, "/v2/team/app/tags/list?"+tt.query+"&ns="+downNS)
		link := strings.TrimSuffix(strings.TrimPrefix(resp.Header.Get("Link"), "<"), `>; rel="next"`)
		if resp.StatusCode != 200 || !strings.Contains(string(body), `"tags":`+tt.body) || link != tt.link {
			t.Errorf("%s: %s %s Link %q; want tags %s Link %q", tt.query, resp.Status, body, link, tt.body, tt.link)
		}
	}
	// Nothing local either: a 404, never an empty list that looks real.
	resp, body = f.get(t, http.MethodGet, "/v2/other/tags/list?ns="+downNS)
	mustError(t, "nothing local", resp, body, 404, "NAME_UNKNOWN")
}

func TestReferrers(t *testing.T) {
	for _, api := range []bool{true, false} {
		t.Run(map[bool]string{true: "referrers API", false: "tag schema"}[api], func(t *testing.T) {
			f := newListFixture(t, api, nil)
			subject := imageManifest(t, ocispec.MediaTypeImageConfig, nil, nil)
			subjectD := f.push(t, "app", "v1", ocispec.MediaTypeImageManifest, subject)
			subjectDesc := &ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: subjectD, Size: int64(len(subject))}
			const sbom, sig = "application/vnd.example.sbom", "application/vnd.example.signature"
			var descs []ocispec.Descriptor
			for _, at := range []string{sbom, sig, sbom} {
				m := imageManifest(t, at, subjectDesc, map[string]string{"n": strconv.Itoa(len(descs))})
				d := f.push(t, "app", digest.FromBytes(m).String(), ocispec.MediaTypeImageManifest, m)
				descs = append(descs, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(m)),
					ArtifactType: at, Annotations: map[string]string{"n": strconv.Itoa(len(descs))}})
			}
			if !api {
				// A client that pushed these to a registry without the
				// referrers API kept the tag schema's index.
				idx := ocispec.Index{MediaType: ocispec.MediaTypeImageIndex, Manifests: descs}
				idx.SchemaVersion = 2
				b, _ := json.Marshal(idx)
				f.push(t, "app", upstream.ReferrersTag(subjectD), ocispec.MediaTypeImageIndex, b)
			}
			path := "/v2/app/referrers/" + subjectD.String()
			check := func(query string, want []ocispec.Descriptor, filtered bool) {
				t.Helper()
				resp, body := f.get(t, http.MethodGet, path+"?"+query+"ns="+listNS)
				var idx ocispec.Index
				if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex ||
					json.Unmarshal(body, &idx) != nil || idx.SchemaVersion != 2 || idx.MediaType != ocispec.MediaTypeImageIndex {
					t.Fatalf("%s: %s %v %s", query, resp.Status, resp.Header, body)
				}
				if got := resp.Header.Get("OCI-Filters-Applied"); (got == "artifactType") != filtered {
					t.Fatalf("%s: OCI-Filters-Applied %q, want filtered=%v", query, got, filtered)
				}
				var gotD, wantD []string
				for _, d := range idx.Manifests {
					gotD = append(gotD, d.Digest.String()+" "+d.ArtifactType)
				}
				for _, d := range want {
					wantD = append(wantD, d.Digest.String()+" "+d.ArtifactType)
				}
				slices.Sort(gotD)
				slices.Sort(wantD)
				if !slices.Equal(gotD, wantD) {
					t.Fatalf("%s: referrers\n%v\nwant\n%v", query, gotD, wantD)
				}
			}
			sboms := []ocispec.Descriptor{descs[0], descs[2]}
			check("", descs, false)
			if api {
				// go-containerregistry does not filter: the header says so,
				// the client filters, and Shoal passes both on as they came.
				check("artifactType="+url.QueryEscape(sbom)+"&", descs, false)
				f.front.set(func(f *front) { f.filter = true })
				check("artifactType="+url.QueryEscape(sbom)+"&", sboms, true)
			} else {
				// Without the API Shoal filters the tag schema's index.
				check("artifactType="+url.QueryEscape(sbom)+"&", sboms, true)
				check("artifactType="+url.QueryEscape("application/none")+"&", nil, true)
			}
			// A subject nothing refers to: an empty index either way.
			other := digest.FromString("nothing refers to this")
			resp, body := f.get(t, http.MethodGet, "/v2/app/referrers/"+other.String()+"?ns="+listNS)
			if resp.StatusCode != 200 || !strings.Contains(string(body), `"manifests":[]`) {
				t.Fatalf("no referrers: %s %s", resp.Status, body)
			}
			resp, body = f.get(t, http.MethodHead, path+"?ns="+listNS)
			if resp.StatusCode != 200 || len(body) != 0 || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
				t.Fatalf("HEAD: %s %v", resp.Status, resp.Header)
			}
			// The manifests it lists come through the normal chain (not
			// configured here): the index only names them.
			var names []string
			for _, r := range f.front.seen() {
				names = append(names, r.Method+" "+r.URL.Path)
			}
			for _, n := range names {
				if !strings.Contains(n, "/referrers/") && !strings.Contains(n, "/manifests/sha256-") {
					t.Fatalf("a referrers request fetched %s", n)
				}
			}
		})
	}
}

func TestReferrersErrors(t *testing.T) {
	f := newListFixture(t, true, localTags{})
	d := digest.FromString("x").String()
	for _, tt := range []errorCase{
		{name: "forbidden", auth: "forbidden", path: "/v2/app/referrers/" + d + "?ns=" + listNS, wantStatus: 404, code: "NAME_UNKNOWN"},
		{name: "basic auth", auth: "basic", path: "/v2/app/referrers/" + d + "?ns=" + listNS, wantStatus: 404, code: "NAME_UNKNOWN"},
		{name: "429", status: 429, path: "/v2/app/referrers/" + d + "?ns=" + listNS, wantStatus: 404, code: "NAME_UNKNOWN"},
		{name: "503", status: 503, path: "/v2/app/referrers/" + d + "?ns=" + listNS, wantStatus: 404, code: "NAME_UNKNOWN"},
		{name: "upstream down", path: "/v2/app/referrers/" + d + "?ns=" + downNS, wantStatus: 404, code: "NAME_UNKNOWN"},
		{name: "no ns", path: "/v2/app/referrers/" + d, wantStatus: 404, code: "NAME_UNKNOWN"},
		{name: "bad digest", path: "/v2/app/referrers/sha256:abc?ns=" + listNS, wantStatus: 400, code: "DIGEST_INVALID"},
		{name: "bad artifactType", path: "/v2/app/referrers/" + d + "?artifactType=nonsense&ns=" + listNS, wantStatus: 400, code: "UNSUPPORTED"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f.front.set(func(f *front) { f.auth, f.status = tt.auth, tt.status })
			for _, method := range []string{http.MethodGet, http.MethodHead} {
				resp, body := f.get(t, method, tt.path)
				if method == http.MethodHead {
					if resp.StatusCode != tt.wantStatus || len(body) != 0 {
						t.Fatalf("HEAD: %s %q", resp.Status, body)
					}
					continue
				}
				mustError(t, tt.name, resp, body, tt.wantStatus, tt.code)
			}
		})
	}
}

// A peer never gets a listing: it could not check it.
func TestListsNotForPeers(t *testing.T) {
	f := newListFixture(t, true, nil)
	for _, path := range []string{"/v2/app/tags/list?ns=" + listNS, "/v2/app/referrers/" + digest.FromString("x").String() + "?ns=" + listNS} {
		req, _ := http.NewRequest(http.MethodGet, f.srv.URL+path, nil)
		req.Header.Set("Shoal-Peer", "1")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		mustError(t, path, resp, body, 404, "NAME_UNKNOWN")
	}
	if n := len(f.front.seen()); n != 0 {
		t.Fatalf("a peer's listing reached the upstream %d times", n)
	}
}
