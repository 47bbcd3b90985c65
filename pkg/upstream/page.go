package upstream

import (
	"bytes"
	"net/http"
	"net/url"
	"strings"

	"github.com/shoalproject/shoal/pkg/oci"
)

// Page is one page of a tag list or of a referrers index, as the upstream
// gave it. Neither is content-addressed: a page is passed on, never stored.
type Page struct {
	// Body is the upstream's JSON byte for byte (unless Shoal filtered a tag
	// schema index), checked to have the shape the endpoint promises.
	Body        []byte
	ContentType string
	// Next is the query of the next page of the same endpoint, read from the
	// upstream's rel="next" Link; nil on the last page. The HTTP layer adds
	// ns and writes its own Link, so that the client's next request comes
	// back to the mirror.
	Next url.Values
	// FiltersApplied is OCI-Filters-Applied (referrers) as the upstream sent
	// it, or "artifactType" when Shoal filtered a tag schema index itself.
	FiltersApplied string
	// TagSchema: the upstream has no referrers API, and Body is the index of
	// the referrers tag schema (<alg>-<hex>), or an empty index without one.
	TagSchema bool
}

// nextPage reads the upstream's rel="next" Link for the endpoint at path
// (without the upstream's base path). The target must be that same endpoint
// on the same upstream, relative or absolute, and its query must pass the
// checks a client's query passes. Anything else is ErrUnavailable: dropping
// the link would end the listing early without saying so.
func nextPage(resp *http.Response, t *target, kind oci.Kind, path string) (url.Values, error) {
	raw, err := oci.NextLink(resp.Header.Values("Link"))
	if err != nil {
		return nil, unavailablef("%s: %v", path, err)
	}
	if raw == "" {
		return nil, nil
	}
	ref, err := url.Parse(raw)
	if err != nil {
		return nil, unavailablef("next page %q: %v", clip(raw), err)
	}
	asked := resp.Request.URL // after any redirect
	next := asked.ResolveReference(ref)
	switch {
	case !strings.EqualFold(next.Host, asked.Host) && !strings.EqualFold(next.Host, t.base.Host):
		return nil, unavailablef("next page on another host: %q", clip(raw))
	case next.Path != t.base.Path+path && next.Path != path, next.RawPath != "":
		return nil, unavailablef("next page is not %s: %q", path, clip(raw))
	}
	q, err := oci.ParseListQuery(kind, next.RawQuery)
	if err != nil {
		return nil, unavailablef("next page %q: %v", clip(raw), err)
	}
	if len(q.Params) == 0 {
		// A client would ask for the first page again, and again.
		return nil, unavailablef("next page is the first page: %q", clip(raw))
	}
	return q.Params, nil
}

// isObject reports JSON that is an object: json.Unmarshal accepts null.
func isObject(b []byte) bool {
	return bytes.HasPrefix(bytes.TrimLeft(b, " \t\r\n"), []byte("{"))
}
