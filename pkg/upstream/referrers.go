package upstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/oci"
)

// emptyIndex is the referrers answer for a subject nothing refers to.
var emptyIndex = []byte(`{"schemaVersion":2,"mediaType":"` + ocispec.MediaTypeImageIndex + `","manifests":[]}`)

// Referrers reads one page of the referrers of subject in name from the
// upstream for ns: GET /v2/<name>/referrers/<subject> with query
// (artifactType, a registry's own pagination) as given, passing the index
// and OCI-Filters-Applied on as the upstream sent them. An upstream without
// the referrers API answers 404; then, as the distribution-spec tells
// clients, the referrers tag schema is read instead (see tagSchema). 401 and
// 403 are ErrNotFound. Bounds as for Tags.
func (c *Client) Referrers(ctx context.Context, ns, name string, subject digest.Digest, query url.Values) (*Page, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	if err := subject.Validate(); err != nil {
		return nil, refusedf("invalid digest %q: %v", subject, err)
	}
	t, err := c.target(ns)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ListTimeout)
	defer cancel()
	accept := http.Header{"Accept": {ocispec.MediaTypeImageIndex}}
	path := "/v2/" + name + "/referrers/" + subject.String()
	resp, err := c.do(ctx, t, http.MethodGet, name, path, query, accept, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusNotFound {
		drainClose(resp.Body)
		return c.tagSchema(ctx, t, name, subject, query.Get("artifactType"))
	}
	body, err := readLimited(resp, c.cfg.MaxListSize, "referrers index")
	if err != nil {
		return nil, err
	}
	if err := checkIndex(body); err != nil {
		return nil, unavailablef("referrers of %s@%s: %v", name, subject, err)
	}
	next, err := nextPage(resp, t, oci.KindReferrers, path)
	if err != nil {
		return nil, err
	}
	return &Page{Body: body, ContentType: ocispec.MediaTypeImageIndex, Next: next,
		FiltersApplied: resp.Header.Get("OCI-Filters-Applied")}, nil
}

// tagSchema reads the referrers tag schema: an index tagged
// <alg>-<first 64 hex digits of subject>, kept by clients for registries
// without the referrers API. No such tag means no referrers, so the answer is
// an empty index, as a client would conclude. With artifactType Shoal
// filters the index itself and says so in FiltersApplied.
func (c *Client) tagSchema(ctx context.Context, t *target, name string, subject digest.Digest, artifactType string) (*Page, error) {
	accept := http.Header{"Accept": {ocispec.MediaTypeImageIndex}}
	tag := ReferrersTag(subject)
	resp, err := c.do(ctx, t, http.MethodGet, name, "/v2/"+name+"/manifests/"+tag, nil, accept, http.StatusOK, http.StatusNotFound)
	if err != nil {
		return nil, err
	}
	page := &Page{ContentType: ocispec.MediaTypeImageIndex, TagSchema: true}
	if artifactType != "" {
		page.FiltersApplied = "artifactType"
	}
	if resp.StatusCode == http.StatusNotFound {
		drainClose(resp.Body)
		page.Body = emptyIndex
		return page, nil
	}
	body, err := c.readManifest(resp)
	if err != nil {
		return nil, err
	}
	if hd, err := digest.Parse(resp.Header.Get("Docker-Content-Digest")); err == nil && hd.Algorithm().FromBytes(body) != hd {
		return nil, unavailablef("digest mismatch: %s:%s announced %s", name, tag, hd)
	}
	if mt := manifestType(resp.Header.Get("Content-Type"), body); mt != ocispec.MediaTypeImageIndex {
		return nil, unavailablef("%s:%s is a %s, not a referrers index", name, tag, mt)
	}
	if err := checkIndex(body); err != nil {
		return nil, unavailablef("%s:%s: %v", name, tag, err)
	}
	if page.Body = body; artifactType != "" {
		if page.Body, err = filterIndex(body, artifactType); err != nil {
			return nil, unavailablef("%s:%s: %v", name, tag, err)
		}
	}
	return page, nil
}

// ReferrersTag is the referrers tag schema's tag for subject:
// <alg>-<encoded>, the encoded part cut to 64 characters.
func ReferrersTag(subject digest.Digest) string {
	enc := subject.Encoded()
	return subject.Algorithm().String() + "-" + enc[:min(64, len(enc))]
}

// checkIndex accepts a JSON image index: schemaVersion 2, the index media
// type or none, manifests a list when present.
func checkIndex(body []byte) error {
	var idx struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		Manifests     []json.RawMessage `json:"manifests"`
	}
	switch err := json.Unmarshal(body, &idx); {
	case err != nil || !isObject(body):
		return errors.New("not a JSON image index")
	case idx.SchemaVersion != 2:
		return fmt.Errorf("index schemaVersion %d", idx.SchemaVersion)
	case idx.MediaType != "" && idx.MediaType != ocispec.MediaTypeImageIndex:
		return fmt.Errorf("index of media type %q", clip(idx.MediaType))
	}
	return nil
}

// filterIndex keeps the descriptors of artifactType, and every other field
// of the index as it was.
func filterIndex(body []byte, artifactType string) ([]byte, error) {
	var top map[string]json.RawMessage
	var manifests []json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, err
	}
	if m, ok := top["manifests"]; ok {
		if err := json.Unmarshal(m, &manifests); err != nil {
			return nil, err
		}
	}
	kept := make([]json.RawMessage, 0, len(manifests))
	for _, m := range manifests {
		var d struct {
			ArtifactType string `json:"artifactType"`
		}
		if err := json.Unmarshal(m, &d); err != nil {
			return nil, err
		}
		if d.ArtifactType == artifactType {
			kept = append(kept, m)
		}
	}
	var err error
	if top["manifests"], err = json.Marshal(kept); err != nil {
		return nil, err
	}
	return json.Marshal(top)
}
