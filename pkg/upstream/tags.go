package upstream

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"

	"github.com/shoalproject/shoal/pkg/oci"
)

// Tags reads one page of name's tag list from the upstream for ns:
// GET /v2/<name>/tags/list with query (n, last, or a cursor of the
// registry's own) as given. The body is passed on as the upstream wrote it,
// once it is known to be a tag list. 404, 401 and 403 are ErrNotFound; an
// upstream that cannot be reached, or answers something else, is
// ErrUnavailable. The call is bounded by Config.ListTimeout and the body by
// Config.MaxListSize.
func (c *Client) Tags(ctx context.Context, ns, name string, query url.Values) (*Page, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	t, err := c.target(ns)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ListTimeout)
	defer cancel()
	path := "/v2/" + name + "/tags/list"
	resp, err := c.do(ctx, t, http.MethodGet, name, path, query, http.Header{"Accept": {"application/json"}}, http.StatusOK)
	if err != nil {
		return nil, err
	}
	body, err := readLimited(resp, c.cfg.MaxListSize, "tag list")
	if err != nil {
		return nil, err
	}
	var list struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(body, &list); err != nil || !isObject(body) {
		return nil, unavailablef("tag list of %s is not a JSON tag list", name)
	}
	next, err := nextPage(resp, t, oci.KindTags, path)
	if err != nil {
		return nil, err
	}
	ct := resp.Header.Get("Content-Type")
	if mediaTypeOnly(ct) != "application/json" {
		ct = "application/json"
	}
	return &Page{Body: body, ContentType: ct, Next: next}, nil
}
