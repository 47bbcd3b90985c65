package oci

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Kind is what a request path names.
type Kind string

const (
	KindBase      Kind = "base" // /v2/
	KindManifest  Kind = "manifest"
	KindBlob      Kind = "blob"
	KindTags      Kind = "tags"      // /v2/<name>/tags/list
	KindReferrers Kind = "referrers" // /v2/<name>/referrers/<digest>
)

// Request is a parsed pull request path. Exactly one of Tag and Digest is set
// for manifests; blobs and referrers always carry a Digest (for referrers, the
// subject's); tag lists carry neither.
type Request struct {
	Kind   Kind
	Name   string
	Tag    string
	Digest digest.Digest
}

// Reference is the tag or digest as written in the path.
func (r Request) Reference() string {
	if r.Digest != "" {
		return r.Digest.String()
	}
	return r.Tag
}

// ParsePath parses /v2/, /v2/<name>/manifests/<reference>,
// /v2/<name>/blobs/<digest>, /v2/<name>/tags/list and
// /v2/<name>/referrers/<digest>. The path must already be unescaped (url.URL.Path);
// "." and ".." segments and empty segments are refused, never cleaned, so that
// no path means two things.
func ParsePath(p string) (Request, error) {
	if p == "/v2/" || p == "/v2" {
		return Request{Kind: KindBase}, nil
	}
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return Request{}, fmt.Errorf("%w: not under /v2/", ErrPathInvalid)
	}
	segs := strings.Split(rest, "/")
	for _, s := range segs {
		if s == "" || s == "." || s == ".." {
			return Request{}, fmt.Errorf("%w: empty, . or .. segment", ErrPathInvalid)
		}
	}
	if len(segs) < 3 {
		return Request{}, fmt.Errorf("%w: want <name>/(manifests|blobs|tags|referrers)/<reference>", ErrUnsupported)
	}
	// The resource keyword is the second-to-last segment: names may themselves
	// contain "blobs", "manifests", "tags" or "referrers" as components.
	n := len(segs)
	name, kind, ref := strings.Join(segs[:n-2], "/"), segs[n-2], segs[n-1]
	if err := ValidateName(name); err != nil {
		return Request{}, err
	}
	r := Request{Name: name}
	switch kind {
	case "blobs", "referrers":
		d, err := ParseDigest(ref)
		if err != nil {
			return Request{}, err
		}
		r.Kind, r.Digest = KindBlob, d
		if kind == "referrers" {
			r.Kind = KindReferrers
		}
	case "tags":
		if ref != "list" {
			return Request{}, fmt.Errorf("%w: tags/%q", ErrUnsupported, truncate(ref))
		}
		r.Kind = KindTags
	case "manifests":
		r.Kind = KindManifest
		if strings.Contains(ref, ":") {
			d, err := ParseDigest(ref)
			if err != nil {
				return Request{}, err
			}
			r.Digest = d
		} else {
			if err := ValidateTag(ref); err != nil {
				return Request{}, err
			}
			r.Tag = ref
		}
	default:
		return Request{}, fmt.Errorf("%w: %q", ErrUnsupported, truncate(kind))
	}
	return r, nil
}
