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
	if rw, ok := b.Content.(rangeWriter); ok && b.Size >= 0 {
		if err := serveTransfer(w, r, b.Size, rw); err != nil {
			// The body is short: never let it end as if complete.
			g.log.Warn("aborting response", "digest", req.Digest, "source", b.Source(), "err", err)
			return outcome{cause: err, abort: true, blame: b.Source()}
		}
	} else if b.Size >= 0 {
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
		return outcome{cause: err, abort: true, blame: b.Source()}
	}
	return outcome{source: b.Source()}
}

func setBlobHeaders(h http.Header, req mirror.Request) {
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Accept-Ranges", "bytes")
	h.Set("Docker-Content-Digest", req.Digest.String())
	h.Set("ETag", `"`+req.Digest.String()+`"`)
}

// rangeWriter is a blob still arriving (an inflight transfer): it writes a
// range to w as the bytes become readable, from memory with no copy, or by
// sendfile from its spool.
type rangeWriter interface {
	WriteRange(w io.Writer, off, n int64) (int64, error)
}

// serveTransfer answers a GET from a transfer: one range or the whole body,
// with headers sent at once, before any byte is readable, so that a client
// waiting for held bytes (a peer's, released only once verified) sees an
// answer rather than a silent connection.
func serveTransfer(w http.ResponseWriter, r *http.Request, size int64, rw rangeWriter) error {
	h := w.Header()
	rng, partial, err := parseRange(r.Header.Get("Range"), size)
	if ir := r.Header.Get("If-Range"); ir != "" && ir != h.Get("ETag") {
		rng, partial, err = byteRange{}, false, nil // the client's copy is of something else
	}
	if err != nil {
		h.Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
		h.Set("Content-Type", "text/plain; charset=utf-8")
		h.Del("Docker-Content-Digest")
		w.WriteHeader(http.StatusRequestedRangeNotSatisfiable)
		return nil
	}
	status := http.StatusOK
	if !partial {
		rng = byteRange{start: 0, length: size}
	} else {
		status = http.StatusPartialContent
		h.Set("Content-Range", rng.contentRange(size))
	}
	h.Set("Content-Length", strconv.FormatInt(rng.length, 10))
	w.WriteHeader(status)
	http.NewResponseController(w).Flush()
	_, err = rw.WriteRange(w, rng.start, rng.length)
	return err
}
