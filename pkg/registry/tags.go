package registry

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"

	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/oci"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// serveTags answers GET and HEAD on /v2/<name>/tags/list. Only the upstream
// knows a repository's tags, so it is asked, with the client's pagination;
// the node's own image store answers only when the upstream cannot be
// reached, never when it answered (404, or 401/403 for credentials), and
// peers never: a listing is not content-addressed, so nothing could check a
// peer's.
func (g *Registry) serveTags(w http.ResponseWriter, r *http.Request, req mirror.Request) outcome {
	q, err := g.listQuery(r, req)
	if err != nil {
		return failed(err, req.Kind)
	}
	up, err := g.lists.Tags(r.Context(), req.NS, req.Name, q.Params)
	if errors.Is(err, upstream.ErrUnavailable) && g.localTags != nil {
		return g.serveLocalTags(w, r, req, q, err)
	}
	if err != nil {
		return failed(err, req.Kind)
	}
	writePage(w, r, req, page{body: up.Body, contentType: up.ContentType, next: up.Next, source: mirror.SourceUpstream})
	return outcome{source: mirror.SourceUpstream}
}

// tagList is the distribution-spec's tag list document.
type tagList struct {
	Name string   `json:"name"`
	Tags []string `json:"tags"`
}

// serveLocalTags lists the tags this node pulled, which may lag behind the
// registry: the response says so in Shoal-Source: local, and the log.
func (g *Registry) serveLocalTags(w http.ResponseWriter, r *http.Request, req mirror.Request, q oci.ListQuery, uerr error) outcome {
	tags, err := g.localTags.Tags(r.Context(), req.NS, req.Name)
	if err == nil && len(tags) == 0 {
		err = errors.New("no tags")
	}
	if err != nil {
		return failed(fmt.Errorf("%w; local store: %v", uerr, err), req.Kind)
	}
	tags, next := paginate(tags, q)
	body, err := json.Marshal(tagList{Name: req.Name, Tags: tags})
	if err != nil {
		return failed(err, req.Kind)
	}
	g.log.Warn("tag list answered from the local image store; upstream unreachable",
		"ns", req.NS, "name", req.Name, "tags", len(tags), "upstream_err", uerr)
	writePage(w, r, req, page{body: body, contentType: "application/json", next: next, source: mirror.SourceLocal})
	return outcome{source: mirror.SourceLocal}
}

// paginate applies last and n to sorted tags as a registry does, and returns
// the query of the next page when some are left.
func paginate(sorted []string, q oci.ListQuery) ([]string, url.Values) {
	tags := slices.Clone(sorted)
	if q.Last != "" {
		i, found := slices.BinarySearch(tags, q.Last)
		if found {
			i++
		}
		tags = tags[i:]
	}
	if tags == nil {
		tags = []string{} // "tags": [], not null
	}
	if q.N < 0 || len(tags) <= q.N {
		return tags, nil
	}
	tags = tags[:q.N]
	if q.N == 0 {
		return tags, nil
	}
	return tags, url.Values{"n": {strconv.Itoa(q.N)}, "last": {tags[len(tags)-1]}}
}
