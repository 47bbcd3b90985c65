package upstream

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
)

// manifestAccept is the Accept header sent for manifests: the client's own
// values, so that a registry that negotiates (Docker schema 2 or OCI, an
// index or one platform's manifest) answers as it would answer the client;
// without any, the types Shoal can pass on, since some registries would
// otherwise convert to the obsolete schema1.
func manifestAccept(accept []string) http.Header {
	if len(accept) > 0 {
		return http.Header{"Accept": slices.Clone(accept)}
	}
	return http.Header{"Accept": {strings.Join([]string{
		ocispec.MediaTypeImageIndex,
		ocispec.MediaTypeImageManifest,
		mediaTypeDockerManifestList,
		mediaTypeDockerManifest,
	}, ", ")}}
}

// Resolve resolves name:tag on the upstream for ns to a descriptor, asking
// with accept (the client's Accept values; nil for Shoal's own list). It asks
// with HEAD and uses Docker-Content-Digest, Content-Length and Content-Type;
// when any of those is missing or unusable it GETs the manifest and
// describes the bytes it got (verifying them against Docker-Content-Digest
// when that is present). The whole call is bounded by Config.TagTimeout.
func (c *Client) Resolve(ctx context.Context, ns, name, tag string, accept []string) (ocispec.Descriptor, error) {
	if err := checkName(name); err != nil {
		return ocispec.Descriptor{}, err
	}
	if err := checkTag(tag); err != nil {
		return ocispec.Descriptor{}, err
	}
	t, err := c.target(ns)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.TagTimeout)
	defer cancel()
	path := "/v2/" + name + "/manifests/" + tag

	resp, err := c.do(ctx, t, http.MethodHead, name, path, nil, manifestAccept(accept), http.StatusOK)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	drainClose(resp.Body)
	d, derr := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	mt := mediaTypeOnly(resp.Header.Get("Content-Type"))
	if derr == nil && resp.ContentLength >= 0 && resp.ContentLength <= c.cfg.MaxManifestSize && !genericType(mt) {
		return ocispec.Descriptor{MediaType: mt, Digest: d, Size: resp.ContentLength}, nil
	}
	c.log.Debug("upstream: HEAD did not describe the manifest, falling back to GET", "ns", t.ns, "name", name, "tag", tag)

	resp, err = c.do(ctx, t, http.MethodGet, name, path, nil, manifestAccept(accept), http.StatusOK)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	body, err := c.readManifest(resp)
	if err != nil {
		return ocispec.Descriptor{}, err
	}
	d = digest.FromBytes(body)
	if hd, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil {
		if hd.Algorithm().FromBytes(body) != hd {
			return ocispec.Descriptor{}, unavailablef("digest mismatch: %s:%s announced %s", name, tag, hd)
		}
		d = hd
	}
	return ocispec.Descriptor{
		MediaType: manifestType(resp.Header.Get("Content-Type"), body),
		Digest:    d,
		Size:      int64(len(body)),
	}, nil
}

// Manifest fetches the manifest dgst, asking with accept as Resolve does,
// and returns its bytes, verified against dgst, and its media type (the
// upstream's Content-Type, or the type the manifest declares when the
// upstream sent none or a generic one).
func (c *Client) Manifest(ctx context.Context, ns, name string, dgst digest.Digest, accept []string) ([]byte, string, error) {
	if err := checkName(name); err != nil {
		return nil, "", err
	}
	if err := dgst.Validate(); err != nil {
		return nil, "", refusedf("invalid digest %q: %v", dgst, err)
	}
	t, err := c.target(ns)
	if err != nil {
		return nil, "", err
	}
	resp, err := c.do(ctx, t, http.MethodGet, name, "/v2/"+name+"/manifests/"+dgst.String(), nil, manifestAccept(accept), http.StatusOK)
	if err != nil {
		return nil, "", err
	}
	body, err := c.readManifest(resp)
	if err != nil {
		return nil, "", err
	}
	if got := dgst.Algorithm().FromBytes(body); got != dgst {
		return nil, "", unavailablef("digest mismatch: %s@%s: got %s", name, dgst, got)
	}
	ct := resp.Header.Get("Content-Type")
	if genericType(mediaTypeOnly(ct)) {
		ct = manifestType(ct, body)
	}
	return body, ct, nil
}

// readManifest reads and closes the body, refusing more than MaxManifestSize.
func (c *Client) readManifest(resp *http.Response) ([]byte, error) {
	return readLimited(resp, c.cfg.MaxManifestSize, "manifest")
}

// readLimited reads and closes the body of what (for errors), refusing more
// than limit bytes.
func readLimited(resp *http.Response, limit int64, what string) ([]byte, error) {
	defer resp.Body.Close()
	if resp.ContentLength > limit {
		return nil, unavailablef("%s of %d bytes exceeds the %d-byte limit", what, resp.ContentLength, limit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, unavailablef("reading %s: %w", what, err)
	}
	if int64(len(body)) > limit {
		return nil, unavailablef("%s exceeds the %d-byte limit", what, limit)
	}
	return body, nil
}

// genericType reports a Content-Type that says nothing about the manifest.
func genericType(mt string) bool {
	switch mt {
	case "", "application/json", "text/plain", "application/octet-stream", "binary/octet-stream":
		return true
	}
	return false
}

// manifestType returns ct without parameters unless it is generic; then the
// type the manifest declares, or one inferred from its shape (OCI allows
// omitting mediaType), or ct after all.
func manifestType(ct string, body []byte) string {
	if mt := mediaTypeOnly(ct); !genericType(mt) {
		return mt
	}
	var m struct {
		MediaType string          `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
		Config    json.RawMessage `json:"config"`
	}
	if json.Unmarshal(body, &m) == nil {
		switch {
		case m.MediaType != "":
			return m.MediaType
		case m.Manifests != nil:
			return ocispec.MediaTypeImageIndex
		case m.Config != nil:
			return ocispec.MediaTypeImageManifest
		}
	}
	return mediaTypeOnly(ct)
}
