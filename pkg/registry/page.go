package registry

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/oci"
)

// SourceHeader says where a tag list or referrers index came from: "upstream",
// or "local" for a tag list from the node's own image store while the
// upstream could not be reached.
const SourceHeader = "Shoal-Source"

// listQuery parses a tag list's or referrers request's query, and checks
// what both need before anything is asked: an ns naming the registry, a
// client that is not a peer, and an upstream to ask.
func (g *Registry) listQuery(r *http.Request, req mirror.Request) (oci.ListQuery, error) {
	q, err := oci.ParseListQuery(req.Kind, r.URL.RawQuery)
	switch {
	case err != nil:
		return q, err
	case req.FromPeer:
		return q, errListFromPeer
	case req.NS == "":
		return q, errListNoNS
	case g.lists == nil:
		return q, errListsOff
	}
	return q, nil
}

// page is one page of a listing as the client gets it.
type page struct {
	body        []byte
	contentType string
	next        url.Values // query of the next page, without ns; nil on the last
	source      mirror.Source
}

// writePage answers GET (and, headers only, HEAD) with p. The next page's
// Link points back at this mirror, with ns, so that a client that follows it
// stays on the mirror.
func writePage(w http.ResponseWriter, r *http.Request, req mirror.Request, p page) {
	h := w.Header()
	h.Set("Content-Type", p.contentType)
	h.Set("Content-Length", strconv.Itoa(len(p.body)))
	h.Set(SourceHeader, string(p.source))
	if p.next != nil {
		q := url.Values{}
		for k, v := range p.next {
			q[k] = v
		}
		q.Set("ns", req.NS)
		// r.URL.Path was parsed strictly (no escapes), and Encode escapes
		// everything a Link target may not hold.
		h.Set("Link", "<"+r.URL.Path+"?"+q.Encode()+`>; rel="next"`)
	}
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(p.body)
	}
}
