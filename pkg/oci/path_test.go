package oci

import (
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

const d256 = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

func TestParsePath(t *testing.T) {
	long := strings.Repeat("a", 256)
	tests := []struct {
		path    string
		want    Request
		wantErr error
	}{
		{"/v2/", Request{Kind: KindBase}, nil},
		{"/v2", Request{Kind: KindBase}, nil},
		{"/v2/library/nginx/manifests/latest", Request{Kind: KindManifest, Name: "library/nginx", Tag: "latest"}, nil},
		{"/v2/a/manifests/" + d256, Request{Kind: KindManifest, Name: "a", Digest: d256}, nil},
		{"/v2/a/b/c/blobs/" + d256, Request{Kind: KindBlob, Name: "a/b/c", Digest: d256}, nil},
		// "blobs" as a name component: the keyword is the second-to-last segment.
		{"/v2/blobs/blobs/" + d256, Request{Kind: KindBlob, Name: "blobs", Digest: d256}, nil},
		{"/v2/x/manifests/blobs/manifests/v1", Request{Kind: KindManifest, Name: "x/manifests/blobs", Tag: "v1"}, nil},
		{"/v2/a__b/c-d---e/f.g/manifests/V_1.0-rc", Request{Kind: KindManifest, Name: "a__b/c-d---e/f.g", Tag: "V_1.0-rc"}, nil},
		{"/v2/" + long + "/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/" + strings.Repeat("a/", 127) + "a/manifests/x", Request{Kind: KindManifest, Name: strings.Repeat("a/", 127) + "a", Tag: "x"}, nil},
		{"/v2/../etc/passwd/blobs/" + d256, Request{}, ErrPathInvalid},
		{"/v2/a/../b/blobs/" + d256, Request{}, ErrPathInvalid},
		{"/v2/a/./b/blobs/" + d256, Request{}, ErrPathInvalid},
		{"/v2//a/blobs/" + d256, Request{}, ErrPathInvalid},
		{"/v2/a/blobs/" + d256 + "/", Request{}, ErrPathInvalid},
		{"/v2/a/blobs/..", Request{}, ErrPathInvalid},
		{"/v3/a/blobs/" + d256, Request{}, ErrPathInvalid},
		{"/v2/a/tags/list", Request{Kind: KindTags, Name: "a"}, nil},
		{"/v2/a/b/tags/list", Request{Kind: KindTags, Name: "a/b"}, nil},
		{"/v2/tags/tags/list", Request{Kind: KindTags, Name: "tags"}, nil},
		{"/v2/a/tags/lists", Request{}, ErrUnsupported},
		{"/v2/a/tags/list/", Request{}, ErrPathInvalid},
		{"/v2/tags/list", Request{}, ErrUnsupported},
		{"/v2/A/tags/list", Request{}, ErrNameInvalid},
		{"/v2/a/referrers/" + d256, Request{Kind: KindReferrers, Name: "a", Digest: d256}, nil},
		{"/v2/referrers/referrers/" + d256, Request{Kind: KindReferrers, Name: "referrers", Digest: d256}, nil},
		{"/v2/a/referrers/latest", Request{}, ErrDigestInvalid},
		{"/v2/a/referrers/sha256-" + d256[7:], Request{}, ErrDigestInvalid},
		{"/v2/a/referrers", Request{}, ErrUnsupported},
		{"/v2/_catalog", Request{}, ErrUnsupported},
		{"/v2/a/blobs", Request{}, ErrUnsupported},
		{"/v2/A/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/a_/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/a___b/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/a..b/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/-a/manifests/x", Request{}, ErrNameInvalid},
		{"/v2/a/manifests/.x", Request{}, ErrTagInvalid},
		{"/v2/a/manifests/-x", Request{}, ErrTagInvalid},
		{"/v2/a/manifests/" + strings.Repeat("t", 129), Request{}, ErrTagInvalid},
		{"/v2/a/blobs/latest", Request{}, ErrDigestInvalid},
		{"/v2/a/blobs/sha256:abc", Request{}, ErrDigestInvalid},
		{"/v2/a/blobs/" + strings.ToUpper(d256), Request{}, ErrDigestInvalid},
		{"/v2/a/blobs/md5:d41d8cd98f00b204e9800998ecf8427e", Request{}, ErrDigestInvalid},
		{"/v2/a/manifests/sha256:zz", Request{}, ErrDigestInvalid},
		{"/v2/a/blobs/sha512:" + strings.Repeat("0", 128), Request{Kind: KindBlob, Name: "a", Digest: digest.Digest("sha512:" + strings.Repeat("0", 128))}, nil},
	}
	for _, tt := range tests {
		got, err := ParsePath(tt.path)
		if tt.wantErr != nil {
			if !errors.Is(err, tt.wantErr) {
				t.Errorf("ParsePath(%.80q) error = %v, want %v", tt.path, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParsePath(%.80q) = %+v, %v; want %+v", tt.path, got, err, tt.want)
		}
	}
}

func TestParseNamespace(t *testing.T) {
	tests := []struct {
		ns, want string
		ok       bool
	}{
		{"docker.io", "docker.io", true},
		{"Registry.K8s.IO", "registry.k8s.io", true},
		{"localhost:5000", "localhost:5000", true},
		{"127.0.0.1:5000", "127.0.0.1:5000", true}, // syntax only; policy refuses it later
		{"[::1]:5000", "[::1]:5000", true},
		{"[fe80::1]", "[fe80::1]", true},
		{"a-b.c", "a-b.c", true},
		{"", "", false},
		{"a b", "", false},
		{"http://x", "", false},
		{"x/y", "", false},
		{"..", "", false},
		{"-a.b", "", false},
		{"a.-b", "", false},
		{"a:0", "", false},
		{"a:65536", "", false},
		{"a:", "", false},
		{"a:080", "", false},
		{"[::1", "", false},
		{"[::1]x", "", false},
		{"[127.0.0.1]", "", false},
		{"[fe80::1%eth0]", "", false},
		{strings.Repeat("a", 64) + ".io", "", false},
		{"a_b.io", "", false},
		{"a.b%00", "", false},
	}
	for _, tt := range tests {
		got, err := ParseNamespace(tt.ns)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseNamespace(%q) = %q, %v; want %q ok=%v", tt.ns, got, err, tt.want, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrNSInvalid) {
			t.Errorf("ParseNamespace(%q) error %v does not wrap ErrNSInvalid", tt.ns, err)
		}
	}
}

// FuzzParsePath: never panics, and whatever it accepts is canonical: re-building
// the path from the result parses to the same request.
func FuzzParsePath(f *testing.F) {
	for _, s := range []string{"/v2/", "/v2/a/b/manifests/latest", "/v2/a/blobs/" + d256, "/v2/../x", "/v2/a//b/blobs/x",
		"/v2/a/tags/list", "/v2/a/referrers/" + d256} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		r, err := ParsePath(p)
		if err != nil || r.Kind == KindBase {
			return
		}
		consistent := map[Kind]bool{
			KindManifest:  (r.Tag == "") != (r.Digest == ""),
			KindBlob:      r.Tag == "" && r.Digest != "",
			KindReferrers: r.Tag == "" && r.Digest != "",
			KindTags:      r.Tag == "" && r.Digest == "",
		}[r.Kind]
		if r.Name == "" || len(r.Name) > MaxNameLength || !consistent {
			t.Fatalf("accepted %q as inconsistent %+v", p, r)
		}
		if strings.Contains(r.Name, "..") || strings.Contains(r.Name, "//") {
			t.Fatalf("accepted traversal %q", p)
		}
		tail := map[Kind]string{KindBlob: "blobs/", KindManifest: "manifests/", KindReferrers: "referrers/", KindTags: "tags/list"}[r.Kind]
		again, err := ParsePath("/v2/" + r.Name + "/" + tail + r.Reference())
		if err != nil || again != r {
			t.Fatalf("round trip of %q: %+v, %v", p, again, err)
		}
		if r.Digest != "" {
			if err := r.Digest.Validate(); err != nil {
				t.Fatalf("accepted invalid digest %q", r.Digest)
			}
		}
	})
}

func FuzzParseNamespace(f *testing.F) {
	for _, s := range []string{"docker.io", "[::1]:5000", "a:1", "x/y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ns string) {
		got, err := ParseNamespace(ns)
		if err != nil {
			return
		}
		if strings.ContainsAny(got, "/?#@ \t\r\n%") {
			t.Fatalf("accepted %q as %q", ns, got)
		}
		if again, err := ParseNamespace(got); err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", ns, got, again, err)
		}
	})
}
