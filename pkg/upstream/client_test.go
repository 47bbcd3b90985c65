package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const repo = "library/nginx"

func TestResolve(t *testing.T) {
	reg := newFakeRegistry(t)
	body, mt := testManifest(t)
	want := ocispec.Descriptor{MediaType: mt, Digest: digest.FromBytes(body), Size: int64(len(body))}
	reg.addManifest(repo, "latest", body, mt)
	c := newTestClient(t, reg, nil)

	got, err := c.Resolve(context.Background(), testNS, repo, "latest", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != want.Digest || got.Size != want.Size || got.MediaType != want.MediaType {
		t.Fatalf("Resolve = %+v, want %+v", got, want)
	}
	seen := reg.seen()
	if len(seen.reqs) != 1 || seen.reqs[0] != "HEAD /v2/library/nginx/manifests/latest" {
		t.Fatalf("requests = %v, want a single HEAD", seen.reqs)
	}
	accept := seen.lastReq.Header.Get("Accept")
	for _, mt := range []string{ocispec.MediaTypeImageIndex, ocispec.MediaTypeImageManifest, mediaTypeDockerManifestList, mediaTypeDockerManifest} {
		if !strings.Contains(accept, mt) {
			t.Errorf("Accept %q lacks %s", accept, mt)
		}
	}
	if ua := seen.lastReq.Header.Get("User-Agent"); ua != "shoal-test" {
		t.Errorf("User-Agent = %q", ua)
	}
}

// Without Docker-Content-Digest on HEAD, or with a generic Content-Type,
// Resolve GETs the manifest and describes the bytes.
func TestResolveFallsBackToGet(t *testing.T) {
	for _, k := range []knobs{{headNoDigest: true}, {genericType: true}} {
		reg := newFakeRegistry(t)
		body, mt := testManifest(t)
		reg.addManifest(repo, "latest", body, mt)
		reg.set(func(kk *knobs) { *kk = k })
		c := newTestClient(t, reg, nil)
		got, err := c.Resolve(context.Background(), testNS, repo, "latest", nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.Digest != digest.FromBytes(body) || got.Size != int64(len(body)) || got.MediaType != mt {
			t.Fatalf("%+v: Resolve = %+v", k, got)
		}
		if seen := reg.seen(); len(seen.reqs) != 2 || !strings.HasPrefix(seen.reqs[1], "GET ") {
			t.Fatalf("%+v: requests = %v, want HEAD then GET", k, seen.reqs)
		}
	}
}

// statusCases drives the error mapping shared by all four calls.
var statusCases = []struct {
	name string
	k    knobs
	want error
}{
	{"404", knobs{status: http.StatusNotFound}, ErrNotFound},
	{"401 basic", knobs{auth: "basic"}, ErrNotFound},
	{"401 no challenge", knobs{status: http.StatusUnauthorized}, ErrNotFound},
	{"401 after token", knobs{auth: "reject-tokens"}, ErrNotFound},
	{"403", knobs{auth: "forbidden"}, ErrNotFound},
	{"token endpoint 401", knobs{auth: "bearer", tokenStatus: http.StatusUnauthorized}, ErrNotFound},
	{"token endpoint 500", knobs{auth: "bearer", tokenStatus: http.StatusInternalServerError}, ErrUnavailable},
	{"token without token", knobs{auth: "bearer", tokenBody: `{"expires_in":60}`}, ErrUnavailable},
	{"token not json", knobs{auth: "bearer", tokenBody: `<html>`}, ErrUnavailable},
	{"429", knobs{status: http.StatusTooManyRequests}, ErrUnavailable},
	{"408", knobs{status: http.StatusRequestTimeout}, ErrUnavailable},
	{"500", knobs{status: http.StatusInternalServerError}, ErrUnavailable},
	{"502", knobs{status: http.StatusBadGateway}, ErrUnavailable},
	{"503", knobs{status: http.StatusServiceUnavailable}, ErrUnavailable},
	{"418", knobs{status: http.StatusTeapot}, ErrUnavailable},
	{"400", knobs{status: http.StatusBadRequest}, ErrUnavailable},
	{"ok bearer", knobs{auth: "bearer"}, nil},
	{"ok access_token", knobs{auth: "bearer", accessToken: true}, nil},
	{"ok no expires_in", knobs{auth: "bearer", tokenTTL: -1}, nil},
}

func TestStatusMapping(t *testing.T) {
	for _, tc := range statusCases {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry(t)
			body, mt := testManifest(t)
			md := reg.addManifest(repo, "latest", body, mt)
			blob := []byte("layer bytes")
			bd := reg.addBlob(blob)
			k := tc.k
			if k.tokenTTL == 0 {
				k.tokenTTL = 300
			}
			reg.set(func(kk *knobs) { *kk = k })
			c := newTestClient(t, reg, nil)
			ctx := context.Background()
			check := func(call string, err error) {
				t.Helper()
				if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
					t.Errorf("%s = %v, want %v", call, err, tc.want)
				}
			}
			_, err := c.Resolve(ctx, testNS, repo, "latest", nil)
			check("Resolve", err)
			_, _, err = c.Manifest(ctx, testNS, repo, md, nil)
			check("Manifest", err)
			rc, _, err := c.Blob(ctx, testNS, repo, bd, 0)
			if err == nil {
				rc.Close()
			}
			check("Blob", err)
			_, err = c.Stat(ctx, testNS, repo, bd)
			check("Stat", err)
		})
	}
}

func TestNotFound(t *testing.T) {
	reg := newFakeRegistry(t)
	c := newTestClient(t, reg, nil)
	ctx := context.Background()
	d := digest.FromString("missing")
	if _, err := c.Resolve(ctx, testNS, repo, "nope", nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Resolve = %v", err)
	}
	if _, _, err := c.Manifest(ctx, testNS, repo, d, nil); !errors.Is(err, ErrNotFound) {
		t.Errorf("Manifest = %v", err)
	}
	if _, _, err := c.Blob(ctx, testNS, repo, d, 0); !errors.Is(err, ErrNotFound) {
		t.Errorf("Blob = %v", err)
	}
	if _, err := c.Stat(ctx, testNS, repo, d); !errors.Is(err, ErrNotFound) {
		t.Errorf("Stat = %v", err)
	}
}

func TestResolveBoundedByTagTimeout(t *testing.T) {
	reg := newFakeRegistry(t)
	reg.set(func(k *knobs) { k.slow = true })
	c := newTestClient(t, reg, func(cfg *Config) { cfg.TagTimeout = 200 * time.Millisecond })
	start := time.Now()
	_, err := c.Resolve(context.Background(), testNS, repo, "latest", nil)
	elapsed := time.Since(start)
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Resolve = %v, want ErrUnavailable wrapping DeadlineExceeded", err)
	}
	if elapsed > time.Second {
		t.Fatalf("Resolve took %v with a 200ms TagTimeout", elapsed)
	}
}

// The token fetch is inside the TagTimeout too.
func TestResolveTimeoutCoversTokenFetch(t *testing.T) {
	reg := newFakeRegistry(t)
	body, mt := testManifest(t)
	reg.addManifest(repo, "latest", body, mt)
	reg.set(func(k *knobs) { k.auth, k.tokenDelay = "bearer", 700*time.Millisecond })
	c := newTestClient(t, reg, func(cfg *Config) { cfg.TagTimeout = 200 * time.Millisecond })
	start := time.Now()
	if _, err := c.Resolve(context.Background(), testNS, repo, "latest", nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Resolve = %v, want ErrUnavailable", err)
	}
	if elapsed := time.Since(start); elapsed > time.Second {
		t.Fatalf("Resolve took %v with a 200ms TagTimeout", elapsed)
	}
}

func TestManifest(t *testing.T) {
	reg := newFakeRegistry(t)
	body, mt := testManifest(t)
	d := reg.addManifest(repo, "latest", body, mt)
	c := newTestClient(t, reg, nil)
	ctx := context.Background()

	got, ct, err := c.Manifest(ctx, testNS, repo, d, nil)
	if err != nil || !bytes.Equal(got, body) || ct != mt {
		t.Fatalf("Manifest = %q, %q, %v", got, ct, err)
	}

	// A generic Content-Type is replaced by the manifest's own mediaType.
	reg.set(func(k *knobs) { k.genericType = true })
	if _, ct, err = c.Manifest(ctx, testNS, repo, d, nil); err != nil || ct != mt {
		t.Fatalf("Manifest with generic type: %q, %v", ct, err)
	}

	// Bytes that do not hash to the digest are refused.
	reg.set(func(k *knobs) { *k = knobs{serveWrong: true} })
	_, _, err = c.Manifest(ctx, testNS, repo, d, nil)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("tampered Manifest = %v, want ErrUnavailable digest mismatch", err)
	}

	// Larger than MaxManifestSize.
	small := newTestClient(t, reg, func(cfg *Config) { cfg.MaxManifestSize = 16 })
	reg.set(func(k *knobs) { *k = knobs{} })
	if _, _, err := small.Manifest(ctx, testNS, repo, d, nil); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversized Manifest = %v", err)
	}
	if _, err := small.Resolve(ctx, testNS, repo, "latest", nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("oversized Resolve = %v", err)
	}
}

func TestResolveGetDigestMismatch(t *testing.T) {
	body, mt := testManifest(t)
	// HEAD lacks the digest; GET announces one digest and serves other bytes.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(body).String())
		}
		w.Header().Set("Content-Type", mt)
		_, _ = w.Write(append(body, ' '))
	}))
	defer srv.Close()
	c := newTestClient(t, &fakeRegistry{srv: srv}, nil)
	_, err := c.Resolve(context.Background(), testNS, repo, "latest", nil)
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "digest mismatch") {
		t.Fatalf("Resolve = %v, want digest mismatch", err)
	}
}

func TestBlob(t *testing.T) {
	blob := bytes.Repeat([]byte("0123456789"), 10_000)
	for _, tc := range []struct {
		name   string
		k      knobs
		offset int64
	}{
		{"full", knobs{}, 0},
		{"range", knobs{}, 12_345},
		{"range to last byte", knobs{}, int64(len(blob)) - 1},
		{"server ignores range", knobs{ignoreRange: true}, 54_321},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry(t)
			d := reg.addBlob(blob)
			reg.set(func(k *knobs) { *k = tc.k })
			c := newTestClient(t, reg, nil)
			rc, total, err := c.Blob(context.Background(), testNS, repo, d, tc.offset)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			got, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			if total != int64(len(blob)) || !bytes.Equal(got, blob[tc.offset:]) {
				t.Fatalf("total %d, %d bytes; want %d, %d", total, len(got), len(blob), len(blob)-int(tc.offset))
			}
			rng := reg.seen().lastReq.Header.Get("Range")
			if tc.offset > 0 && rng != "bytes="+strconv.FormatInt(tc.offset, 10)+"-" || tc.offset == 0 && rng != "" {
				t.Fatalf("Range header %q for offset %d", rng, tc.offset)
			}
		})
	}
}

func TestBlobShortBody(t *testing.T) {
	blob := bytes.Repeat([]byte("x"), 1000)
	for _, tc := range []struct {
		name   string
		k      knobs
		offset int64
	}{
		{"Content-Length larger than body", knobs{shortBody: true}, 0},
		{"chunked 206 ends before Content-Range end", knobs{short206: true}, 100},
	} {
		t.Run(tc.name, func(t *testing.T) {
			reg := newFakeRegistry(t)
			d := reg.addBlob(blob)
			reg.set(func(k *knobs) { *k = tc.k })
			c := newTestClient(t, reg, nil)
			rc, _, err := c.Blob(context.Background(), testNS, repo, d, tc.offset)
			if err != nil {
				t.Fatal(err)
			}
			defer rc.Close()
			_, err = io.ReadAll(rc)
			if !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("ReadAll = %v, want io.ErrUnexpectedEOF", err)
			}
		})
	}
}

func TestBlobBadRange(t *testing.T) {
	reg := newFakeRegistry(t)
	d := reg.addBlob(bytes.Repeat([]byte("y"), 100))
	reg.set(func(k *knobs) { k.badRangeStart = true })
	c := newTestClient(t, reg, nil)
	if _, _, err := c.Blob(context.Background(), testNS, repo, d, 10); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Blob with misplaced Content-Range = %v, want ErrUnavailable", err)
	}
	if _, _, err := c.Blob(context.Background(), testNS, repo, d, -1); !errors.Is(err, ErrRefused) {
		t.Fatalf("Blob with negative offset = %v, want ErrRefused", err)
	}
}

func TestBlobRedirect(t *testing.T) {
	blob := []byte("blob behind a CDN")
	cdn := newFakeRegistry(t)
	d := cdn.addBlob(blob)
	reg := newFakeRegistry(t)
	reg.set(func(k *knobs) { k.redirectTo = cdn.srv.URL })
	// A listed registry may redirect to another listed host (see
	// TestListedRedirectsGuarded for every other target).
	c := newTestClient(t, reg, func(cfg *Config) { cfg.Upstreams["cdn.shoal.test"] = cdn.srv.URL })

	rc, total, err := c.Blob(context.Background(), testNS, repo, d, 5)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || total != int64(len(blob)) || !bytes.Equal(got, blob[5:]) {
		t.Fatalf("redirected Blob = %q, %d, %v", got, total, err)
	}
	if rng := cdn.seen().lastReq.Header.Get("Range"); rng != "bytes=5-" {
		t.Fatalf("Range lost on redirect: %q", rng)
	}
	if n, err := c.Stat(context.Background(), testNS, repo, d); err != nil || n != int64(len(blob)) {
		t.Fatalf("redirected Stat = %d, %v", n, err)
	}

	// A redirect loop stops after maxRedirects hops.
	reg.set(func(k *knobs) { k.redirectTo = reg.srv.URL })
	if _, _, err := c.Blob(context.Background(), testNS, repo, d, 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("redirect loop = %v, want ErrUnavailable", err)
	}
}

func TestStat(t *testing.T) {
	reg := newFakeRegistry(t)
	d := reg.addBlob([]byte("twelve bytes"))
	c := newTestClient(t, reg, nil)
	n, err := c.Stat(context.Background(), testNS, repo, d)
	if err != nil || n != 12 {
		t.Fatalf("Stat = %d, %v", n, err)
	}
	if m := reg.seen().reqs; len(m) != 1 || !strings.HasPrefix(m[0], "HEAD ") {
		t.Fatalf("requests %v, want one HEAD", m)
	}
}

// An upstream that announces a different digest is caught before any body
// is passed on.
func TestBlobAnnouncedDigestMismatch(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Docker-Content-Digest", digest.FromString("other").String())
		_, _ = io.WriteString(w, "data")
	}))
	defer srv.Close()
	reg := &fakeRegistry{srv: srv}
	c := newTestClient(t, reg, nil)
	d := digest.FromString("data")
	if _, _, err := c.Blob(context.Background(), testNS, repo, d, 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Blob = %v", err)
	}
	if _, err := c.Stat(context.Background(), testNS, repo, d); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Stat = %v", err)
	}
}

func TestInvalidArgumentsRefusedWithoutRequest(t *testing.T) {
	reg := newFakeRegistry(t)
	c := newTestClient(t, reg, nil)
	ctx := context.Background()
	good := digest.FromString("x")
	if _, err := c.Resolve(ctx, testNS, "../etc", "latest", nil); !errors.Is(err, ErrRefused) {
		t.Errorf("Resolve bad name = %v", err)
	}
	if _, err := c.Resolve(ctx, testNS, repo, "a/b", nil); !errors.Is(err, ErrRefused) {
		t.Errorf("Resolve bad tag = %v", err)
	}
	if _, _, err := c.Manifest(ctx, testNS, repo, "sha256:short", nil); !errors.Is(err, ErrRefused) {
		t.Errorf("Manifest bad digest = %v", err)
	}
	if _, _, err := c.Blob(ctx, testNS, "Upper/Case", good, 0); !errors.Is(err, ErrRefused) {
		t.Errorf("Blob bad name = %v", err)
	}
	if _, err := c.Stat(ctx, testNS, repo, "md5:abc"); !errors.Is(err, ErrRefused) {
		t.Errorf("Stat bad digest = %v", err)
	}
	if n := reg.v2Hits.Load(); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

func TestLengthReader(t *testing.T) {
	tests := []struct {
		body      string
		remaining int64
		want      string
		wantErr   error
	}{
		{"hello", 5, "hello", nil},
		{"hello world", 5, "hello", nil}, // never more than declared
		{"hel", 5, "hel", io.ErrUnexpectedEOF},
		{"", 5, "", io.ErrUnexpectedEOF},
		{"", 0, "", nil},
		{"anything", -1, "anything", nil}, // unknown length passes through
	}
	for _, tc := range tests {
		r := &lengthReader{rc: io.NopCloser(strings.NewReader(tc.body)), remaining: tc.remaining}
		got, err := io.ReadAll(r)
		if string(got) != tc.want || !errors.Is(err, tc.wantErr) && err != tc.wantErr {
			t.Errorf("lengthReader(%q, %d) = %q, %v; want %q, %v", tc.body, tc.remaining, got, err, tc.want, tc.wantErr)
		}
	}
	r := &lengthReader{rc: io.NopCloser(iotestErrReader{}), remaining: 10}
	if _, err := r.Read(make([]byte, 4)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("read error = %v, want ErrUnavailable", err)
	}
}

type iotestErrReader struct{}

func (iotestErrReader) Read([]byte) (int, error) { return 0, errors.New("connection reset") }

func TestParseContentRange(t *testing.T) {
	good := map[string][3]int64{
		"bytes 0-9/10":      {0, 9, 10},
		"bytes 5-9/10":      {5, 9, 10},
		"bytes 5-9/*":       {5, 9, -1},
		"bytes 100-100/101": {100, 100, 101},
	}
	for in, want := range good {
		s, e, tot, err := parseContentRange(in)
		if err != nil || [3]int64{s, e, tot} != want {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v; want %v", in, s, e, tot, err, want)
		}
	}
	for _, in := range []string{"", "bytes", "bytes */10", "bytes 5-4/10", "bytes 5-9/9", "bytes -1-9/10", "bits 0-9/10", "bytes 0-9", "bytes a-b/c", "bytes 0-9/-5"} {
		if _, _, _, err := parseContentRange(in); err == nil {
			t.Errorf("parseContentRange(%q) accepted", in)
		}
	}
}

// A listed URL may carry a path prefix; requests go under it.
func TestListedURLWithPathPrefix(t *testing.T) {
	reg := newFakeRegistry(t)
	body, mt := testManifest(t)
	reg.addManifest(repo, "latest", body, mt)
	front := httptest.NewServer(http.StripPrefix("/mirror", reg.srv.Config.Handler))
	defer front.Close()
	c := newTestClient(t, reg, func(cfg *Config) { cfg.Upstreams[testNS] = front.URL + "/mirror/" })
	if _, err := c.Resolve(context.Background(), testNS, repo, "latest", nil); err != nil {
		t.Fatal(err)
	}
	if got := reg.seen().reqs; len(got) != 1 || got[0] != "HEAD /v2/library/nginx/manifests/latest" {
		t.Fatalf("requests %v", got)
	}
}
