package registry

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shoalproject/shoal/pkg/mirror"
)

// serveBlob answers GET and HEAD on /v2/<name>/blobs/<digest>.
func (g *Registry) serveBlob(w http.ResponseWriter, r *http.Request, req mirror.Request) outcome {
	h := w.Header()
	if r.Method == http.MethodHead {
		size, src, err := g.mirror.BlobSize(r.Context(), req)
		if err != nil {
			return failed(err, req.Kind)
		}
		setBlobHeaders(h, req)
		h.Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return outcome{source: src}
	}

	b, err := g.mirror.Blob(r.Context(), req)
	if err != nil {
		return failed(err, req.Kind)
	}
	defer b.Close()
	setBlobHeaders(h, req)
	// One range is all containerd asks for; a multi-range request is answered
	// in full, which HTTP allows, rather than as multipart.
	if strings.Contains(r.Header.Get("Range"), ",") {
		r.Header.Del("Range")
	}
	if b.Size >= 0 {
		// ServeContent does Range, If-Range and 416 properly; given an
		// *os.File its copy is a sendfile.
		http.ServeContent(w, r, "", time.Time{}, b.Content)
	} else {
		// Unknown size: stream it whole; Range cannot be honoured.
		h.Del("Accept-Ranges")
		w.WriteHeader(http.StatusOK)
		io.Copy(w, b.Content)
	}
	if err := b.Verify(r.Context()); err != nil {
		// The bytes were wrong, their size was a lie, or their sources
		// vanished: never let the body end cleanly, so containerd cannot
		// mistake it for the blob.
		g.log.Error("aborting response", "digest", req.Digest, "source", b.Source(), "err", err)
		panic(http.ErrAbortHandler)
	}
	return outcome{source: b.Source()}
}

func setBlobHeaders(h http.Header, req mirror.Request) {
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Docker-Content-Digest", req.Digest.String())
	h.Set("ETag", `"`+req.Digest.String()+`"`)
}
