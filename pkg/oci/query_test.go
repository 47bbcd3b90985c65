package oci

import (
	"errors"
	"net/url"
	"strings"
	"testing"
)

func TestParseListQuery(t *testing.T) {
	tests := []struct {
		kind   Kind
		raw    string
		n      int
		last   string
		at     string
		params string // Params.Encode()
		ok     bool
	}{
		{KindTags, "", -1, "", "", "", true},
		{KindTags, "ns=docker.io", -1, "", "", "", true},
		{KindTags, "n=10&last=v1.2&ns=docker.io", 10, "v1.2", "", "last=v1.2&n=10", true},
		{KindTags, "n=0", 0, "", "", "n=0", true},
		{KindTags, "last=a%20b", -1, "a b", "", "last=a+b", true},
		// A registry's own cursor is forwarded as it is.
		{KindTags, "n=50&next_page=gAAAAABk-x_Y%3D", 50, "", "", "n=50&next_page=gAAAAABk-x_Y%3D", true},
		// artifactType means nothing to a tag list: forwarded, not checked.
		{KindTags, "artifactType=x", -1, "", "", "artifactType=x", true},
		{KindReferrers, "artifactType=application/vnd.example.sbom%2Bjson", -1, "", "application/vnd.example.sbom+json", "artifactType=application%2Fvnd.example.sbom%2Bjson", true},
		{KindReferrers, "artifactType=application/vnd.example.sbom+json", 0, "", "", "", false}, // '+' is a space
		{KindReferrers, "artifactType=nonsense", 0, "", "", "", false},
		{KindReferrers, "artifactType=a/b;x=y", 0, "", "", "", false},
		{KindTags, "n=-1", 0, "", "", "", false},
		{KindTags, "n=+1", 0, "", "", "", false},
		{KindTags, "n=01", 0, "", "", "", false},
		{KindTags, "n=1e3", 0, "", "", "", false},
		{KindTags, "n=99999999", 0, "", "", "", false},
		{KindTags, "n=", 0, "", "", "", false},
		{KindTags, "n=1&n=2", 0, "", "", "", false},
		{KindTags, "ns=a&ns=b", 0, "", "", "", false},
		{KindTags, "n=1;last=x", 0, "", "", "", false},
		{KindTags, "last=%zz", 0, "", "", "", false},
		{KindTags, "last=a%0Ab", 0, "", "", "", false},
		{KindTags, "last=%ff", 0, "", "", "", false},
		{KindTags, "a%20b=1", 0, "", "", "", false},
		{KindTags, "=1", 0, "", "", "", false},
		{KindTags, "last=" + strings.Repeat("x", 1025), 0, "", "", "", false},
		{KindTags, strings.Repeat("a", 65) + "=1", 0, "", "", "", false},
		{KindTags, "a=1&b=1&c=1&d=1&e=1&f=1&g=1&h=1&i=1&j=1&k=1&l=1&m=1&n=1&o=1&p=1&q=1", 0, "", "", "", false},
		{KindManifest, "", 0, "", "", "", false},
	}
	for _, tt := range tests {
		q, err := ParseListQuery(tt.kind, tt.raw)
		if !tt.ok {
			if !errors.Is(err, ErrQueryInvalid) {
				t.Errorf("ParseListQuery(%s, %.60q) = %+v, %v; want ErrQueryInvalid", tt.kind, tt.raw, q, err)
			}
			continue
		}
		if err != nil || q.N != tt.n || q.Last != tt.last || q.ArtifactType != tt.at || q.Params.Encode() != tt.params {
			t.Errorf("ParseListQuery(%s, %q) = %+v (%s), %v; want n=%d last=%q at=%q params %q",
				tt.kind, tt.raw, q, q.Params.Encode(), err, tt.n, tt.last, tt.at, tt.params)
		}
	}
}

func TestValidateMediaType(t *testing.T) {
	for mt, ok := range map[string]bool{
		"application/vnd.oci.image.manifest.v1+json": true,
		"application/vnd.cncf.notary.signature":      true,
		"text/plain":                                 true,
		"application":                                false,
		"/json":                                      false,
		"application/":                               false,
		"a/b/c":                                      false,
		"application/json; charset=utf-8":            false,
		"+a/b":                                       false,
		"a b/c":                                      false,
		strings.Repeat("a", 128) + "/b":              false,
	} {
		if err := ValidateMediaType(mt); (err == nil) != ok {
			t.Errorf("ValidateMediaType(%.40q) = %v, want ok=%v", mt, err, ok)
		}
	}
}

// FuzzParseListQuery: never panics, and what it accepts is canonical: the
// forwarded parameters parse again to the same query, hold no ns and nothing
// a URL would need to smuggle.
func FuzzParseListQuery(f *testing.F) {
	for _, s := range []string{"", "n=10&last=v1", "ns=docker.io&n=0", "artifactType=application/json", "a=%zz", "n=1;x", "last=%00"} {
		f.Add(true, s)
		f.Add(false, s)
	}
	f.Fuzz(func(t *testing.T, referrers bool, raw string) {
		kind := KindTags
		if referrers {
			kind = KindReferrers
		}
		q, err := ParseListQuery(kind, raw)
		if err != nil {
			return
		}
		if _, ok := q.Params["ns"]; ok {
			t.Fatalf("%q: ns forwarded", raw)
		}
		if q.N < -1 || q.N > maxPageSize {
			t.Fatalf("%q: n = %d", raw, q.N)
		}
		if referrers && q.ArtifactType != "" && ValidateMediaType(q.ArtifactType) != nil {
			t.Fatalf("%q: artifactType %q", raw, q.ArtifactType)
		}
		again, err := ParseListQuery(kind, q.Params.Encode())
		if err != nil || again.N != q.N || again.Last != q.Last || again.ArtifactType != q.ArtifactType ||
			again.Params.Encode() != q.Params.Encode() {
			t.Fatalf("%q: round trip %+v -> %+v, %v", raw, q, again, err)
		}
		for k, vs := range q.Params {
			if len(vs) != 1 || strings.ContainsAny(vs[0], "\r\n\x00") {
				t.Fatalf("%q: forwarded %s=%q", raw, k, vs)
			}
		}
		if _, err := url.ParseQuery(q.Params.Encode()); err != nil {
			t.Fatalf("%q: forwarded query does not parse: %v", raw, err)
		}
	})
}
