package upstream

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/oci"
)

func TestNextPage(t *testing.T) {
	base, _ := url.Parse("https://r.example/prefix")
	tgt := &target{ns: "r.example", base: base}
	asked, _ := url.Parse("https://r.example/prefix/v2/a/tags/list?n=2")
	const path = "/v2/a/tags/list"
	tests := []struct {
		link string
		want string // Encode() of the next query; "-" for an error
	}{
		{"", ""},
		{`</prefix/v2/a/tags/list?n=2&last=b>; rel="next"`, "last=b&n=2"},
		{`</v2/a/tags/list?n=2&last=b>; rel="next"`, "last=b&n=2"}, // a front that strips the prefix
		{`<https://R.example/prefix/v2/a/tags/list?last=b>; rel=next`, "last=b"},
		{`<?n=2&last=b>; rel=next`, "last=b&n=2"},
		{`</prefix/v2/a/tags/list?n=2&last=b&ns=evil.example>; rel=next`, "last=b&n=2"},
		{`</prefix/v2/a/tags/list?n=2&next_page=abc%3D>; rel=next`, "n=2&next_page=abc%3D"},
		{`</x>; rel="prev"`, ""},
		{`<https://other.example/prefix/v2/a/tags/list?last=b>; rel=next`, "-"},
		{`</prefix/v2/b/tags/list?last=b>; rel=next`, "-"},
		{`</prefix/v2/a/tags/list>; rel=next`, "-"},
		{`</prefix/v2/a/tags/list?ns=x>; rel=next`, "-"},
		{`</prefix/v2/a/tags/list?n=-2>; rel=next`, "-"},
		{`</prefix/v2/a/tags/list?last=%zz>; rel=next`, "-"},
		{`</prefix/v2/a/tags/%6Cist?last=b>; rel=next`, "-"},
		{`</prefix/v2/a/tags/list?last=b; rel=next`, "-"},
	}
	for _, tt := range tests {
		resp := &http.Response{Header: http.Header{}, Request: &http.Request{URL: asked}}
		if tt.link != "" {
			resp.Header.Set("Link", tt.link)
		}
		got, err := nextPage(resp, tgt, oci.KindTags, path)
		switch {
		case tt.want == "-":
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("%s: %v, %v; want ErrUnavailable", tt.link, got, err)
			}
		case err != nil || got.Encode() != tt.want || (tt.want == "") != (got == nil):
			t.Errorf("%s: %v, %v; want %q", tt.link, got, err, tt.want)
		}
	}
}

func TestReferrersTag(t *testing.T) {
	d := digest.FromString("x")
	if got := ReferrersTag(d); got != "sha256-"+d.Encoded() || oci.ValidateTag(got) != nil {
		t.Errorf("ReferrersTag(%s) = %q", d, got)
	}
	d512 := digest.SHA512.FromString("x")
	if got := ReferrersTag(d512); got != "sha512-"+d512.Encoded()[:64] || oci.ValidateTag(got) != nil {
		t.Errorf("ReferrersTag(%s) = %q", d512, got)
	}
}

func TestFilterIndex(t *testing.T) {
	in := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","annotations":{"k":"v"},"manifests":[
		{"mediaType":"m","digest":"sha256:1","size":1,"artifactType":"a/sbom","x-custom":true},
		{"mediaType":"m","digest":"sha256:2","size":2,"artifactType":"a/sig"}]}`
	got, err := filterIndex([]byte(in), "a/sbom")
	want := `{"annotations":{"k":"v"},"manifests":[{"mediaType":"m","digest":"sha256:1","size":1,"artifactType":"a/sbom","x-custom":true}],` +
		`"mediaType":"application/vnd.oci.image.index.v1+json","schemaVersion":2}`
	if err != nil || string(got) != want {
		t.Fatalf("filterIndex = %s, %v\nwant %s", got, err, want)
	}
	if got, err := filterIndex([]byte(in), "a/none"); err != nil || !strings.Contains(string(got), `"manifests":[]`) {
		t.Fatalf("filterIndex to nothing = %s, %v", got, err)
	}
	if _, err := filterIndex([]byte(`{"manifests":[1]}`), "a/b"); err == nil {
		t.Fatal("filterIndex accepted a number as a descriptor")
	}
}

// The upstream's answers must have the shape of the endpoint, within the
// size limit; anything else is ErrUnavailable, never passed on.
func TestListBodiesChecked(t *testing.T) {
	d := digest.FromString("subject")
	for _, tt := range []struct {
		name, path, ct, body string
		status               int
		ok                   bool
	}{
		{"tags", "/tags/list", "application/json; charset=utf-8", `{"name":"a","tags":["v1"]}`, 200, true},
		{"tags null", "/tags/list", "application/json", `null`, 200, false},
		{"tags not JSON", "/tags/list", "application/json", `<html>`, 200, false},
		{"tags wrong shape", "/tags/list", "application/json", `{"tags":"v1"}`, 200, false},
		{"tags too big", "/tags/list", "application/json", `{"tags":["` + strings.Repeat("v", 2000) + `"]}`, 200, false},
		{"tags 500", "/tags/list", "", "", 500, false},
		{"referrers", "/referrers/", ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageIndex + `","manifests":[]}`, 200, true},
		{"referrers wrong type", "/referrers/", ocispec.MediaTypeImageIndex, `{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageManifest + `"}`, 200, false},
		{"referrers schema 1", "/referrers/", ocispec.MediaTypeImageIndex, `{"schemaVersion":1,"manifests":[]}`, 200, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.ct != "" {
					w.Header().Set("Content-Type", tt.ct)
				}
				w.WriteHeader(tt.status)
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c, err := New(Config{Upstreams: map[string]string{testNS: srv.URL}, MaxListSize: 1000})
			if err != nil {
				t.Fatal(err)
			}
			var p *Page
			if tt.path == "/tags/list" {
				p, err = c.Tags(context.Background(), testNS, "a", nil)
			} else {
				p, err = c.Referrers(context.Background(), testNS, "a", d, nil)
			}
			if tt.ok {
				if err != nil || string(p.Body) != tt.body {
					t.Fatalf("%v, %v", p, err)
				}
				return
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%v, %v; want ErrUnavailable", p, err)
			}
		})
	}
}

// The referrers tag schema's index is checked like any manifest: the digest
// the upstream announces, and that it is an index.
func TestTagSchemaChecked(t *testing.T) {
	subject := digest.FromString("subject")
	idx := `{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageIndex + `","manifests":[]}`
	for _, tt := range []struct {
		name, ct, body, announced string
		ok                        bool
	}{
		{"index", ocispec.MediaTypeImageIndex, idx, digest.FromString(idx).String(), true},
		{"no digest header", ocispec.MediaTypeImageIndex, idx, "", true},
		{"wrong digest", ocispec.MediaTypeImageIndex, idx, digest.FromString("other").String(), false},
		{"an image", ocispec.MediaTypeImageManifest, `{"schemaVersion":2,"config":{}}`, "", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/v2/a/manifests/"+ReferrersTag(subject) {
					http.NotFound(w, r) // no referrers API
					return
				}
				w.Header().Set("Content-Type", tt.ct)
				if tt.announced != "" {
					w.Header().Set("Docker-Content-Digest", tt.announced)
				}
				w.Write([]byte(tt.body))
			}))
			defer srv.Close()
			c, err := New(Config{Upstreams: map[string]string{testNS: srv.URL}})
			if err != nil {
				t.Fatal(err)
			}
			p, err := c.Referrers(context.Background(), testNS, "a", subject, nil)
			if tt.ok != (err == nil) || err != nil && !errors.Is(err, ErrUnavailable) {
				t.Fatalf("%v, %v; want ok=%v", p, err, tt.ok)
			}
			if tt.ok && (!p.TagSchema || string(p.Body) != tt.body) {
				t.Fatalf("page %+v", p)
			}
		})
	}
}

func TestListsRefusedBeforeAnyRequest(t *testing.T) {
	c, err := New(Config{Strict: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.Tags(ctx, "unlisted.example", "a", nil); !errors.Is(err, ErrRefused) {
		t.Errorf("Tags, unlisted ns in strict mode: %v", err)
	}
	if _, err := c.Referrers(ctx, "unlisted.example", "a", digest.FromString("x"), nil); !errors.Is(err, ErrRefused) {
		t.Errorf("Referrers, unlisted ns in strict mode: %v", err)
	}
	if _, err := c.Tags(ctx, "docker.io", "../a", nil); !errors.Is(err, ErrRefused) {
		t.Errorf("Tags, bad name: %v", err)
	}
	if _, err := c.Referrers(ctx, "docker.io", "a", "sha256:short", nil); !errors.Is(err, ErrRefused) {
		t.Errorf("Referrers, bad digest: %v", err)
	}
}
