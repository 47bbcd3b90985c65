package registry

import (
	"net/http"

	"github.com/shoalproject/shoal/pkg/mirror"
)

// serveReferrers answers GET and HEAD on /v2/<name>/referrers/<digest>
// from the upstream, with artifactType and pagination as the client gave
// them and OCI-Filters-Applied as the upstream answered. An upstream without
// the referrers API is read through the referrers tag schema (see
// upstream.Client.Referrers). Never from peers or the node's store: the
// index lists what refers to a digest, and is not itself content-addressed.
// The manifests it lists are fetched by digest through the normal chain.
func (g *Registry) serveReferrers(w http.ResponseWriter, r *http.Request, req mirror.Request) outcome {
	q, err := g.listQuery(r, req)
	if err != nil {
		return failed(err, req.Kind)
	}
	up, err := g.lists.Referrers(r.Context(), req.NS, req.Name, req.Digest, q.Params)
	if err != nil {
		return failed(err, req.Kind)
	}
	if up.FiltersApplied != "" {
		w.Header().Set("OCI-Filters-Applied", up.FiltersApplied)
	}
	if up.TagSchema {
		g.log.Debug("referrers from the referrers tag schema; the upstream has no referrers API",
			"ns", req.NS, "name", req.Name, "subject", req.Digest, "filtered", up.FiltersApplied != "")
	}
	writePage(w, r, req, page{body: up.Body, contentType: up.ContentType, next: up.Next, source: mirror.SourceUpstream})
	return outcome{source: mirror.SourceUpstream}
}
