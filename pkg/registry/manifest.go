package registry

import (
	"net/http"
	"strconv"

	"github.com/shoalproject/shoal/pkg/mirror"
)

// serveManifest answers GET and HEAD on /v2/<name>/manifests/<reference>.
func (g *Registry) serveManifest(w http.ResponseWriter, r *http.Request, req mirror.Request) outcome {
	m, err := g.mirror.Manifest(r.Context(), req)
	if err != nil {
		return failed(err, req.Kind)
	}
	h := w.Header()
	h.Set("Content-Type", m.MediaType)
	h.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	h.Set("Docker-Content-Digest", m.Digest.String())
	h.Set("ETag", `"`+m.Digest.String()+`"`)
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(m.Bytes)
	}
	return outcome{source: m.Source}
}
