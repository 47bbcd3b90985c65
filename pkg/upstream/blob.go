package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	digest "github.com/opencontainers/go-digest"
)

// Blob opens the blob dgst from offset on. It returns the body and the total
// size of the blob (not of the rest), or -1 when the upstream did not say.
// Redirects (to CDNs) are followed, at most 5.
//
// With offset > 0 it sends Range: bytes=<offset>- and accepts a 206 whose
// Content-Range starts exactly at offset. A server that ignores Range and
// answers 200 is tolerated: the first offset bytes are read and discarded
// before Blob returns, so the caller still gets the stream from offset.
//
// The body is not digest-verified here (the caller hashes the whole blob),
// but it is length-checked: it never yields more than the announced length,
// and ending early is reported as io.ErrUnexpectedEOF.
func (c *Client) Blob(ctx context.Context, ns, name string, dgst digest.Digest, offset int64) (io.ReadCloser, int64, error) {
	path, t, err := c.blobTarget(ns, name, dgst)
	if err != nil {
		return nil, 0, err
	}
	if offset < 0 {
		return nil, 0, refusedf("negative offset %d", offset)
	}
	hdr := http.Header{}
	if offset > 0 {
		hdr.Set("Range", "bytes="+strconv.FormatInt(offset, 10)+"-")
	}
	resp, err := c.do(ctx, t, http.MethodGet, name, path, nil, hdr, http.StatusOK, http.StatusPartialContent)
	if err != nil {
		return nil, 0, err
	}
	if err := checkDigestHeader(resp, dgst); err != nil {
		drainClose(resp.Body)
		return nil, 0, err
	}
	body, total, err := blobBody(resp, offset)
	if err != nil {
		_ = resp.Body.Close()
		return nil, 0, err
	}
	return body, total, nil
}

// blobBody checks the response against the requested offset and wraps the
// body in a lengthReader.
func blobBody(resp *http.Response, offset int64) (io.ReadCloser, int64, error) {
	switch {
	case resp.StatusCode == http.StatusPartialContent && offset > 0:
		start, end, total, err := parseContentRange(resp.Header.Get("Content-Range"))
		if err != nil {
			return nil, 0, unavailablef("206 response: %v", err)
		}
		if start != offset {
			return nil, 0, unavailablef("asked for bytes from %d, got Content-Range starting at %d", offset, start)
		}
		n := end - start + 1
		if resp.ContentLength >= 0 && resp.ContentLength != n {
			return nil, 0, unavailablef("Content-Length %d does not match Content-Range length %d", resp.ContentLength, n)
		}
		if total >= 0 && end != total-1 {
			// We asked for everything from offset; less would end the
			// stream cleanly but short of the blob.
			return nil, 0, unavailablef("Content-Range %d-%d/%d stops before the end", start, end, total)
		}
		return &lengthReader{rc: resp.Body, remaining: n}, total, nil
	case resp.StatusCode == http.StatusPartialContent:
		return nil, 0, unavailablef("unrequested 206 response")
	case offset > 0: // 200 to a ranged request: skip to offset ourselves
		total := resp.ContentLength
		if total >= 0 && offset > total {
			return nil, 0, unavailablef("offset %d beyond blob size %d", offset, total)
		}
		if _, err := io.CopyN(io.Discard, resp.Body, offset); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, 0, unavailablef("skipping to offset %d of a full response: %w", offset, err)
		}
		remaining := int64(-1)
		if total >= 0 {
			remaining = total - offset
		}
		return &lengthReader{rc: resp.Body, remaining: remaining}, total, nil
	default:
		return &lengthReader{rc: resp.Body, remaining: resp.ContentLength}, resp.ContentLength, nil
	}
}

// Stat returns the size of blob dgst, from a HEAD request. A success always
// carries a size: an upstream that does not send Content-Length is
// ErrUnavailable, since the mirror must announce an exact length.
func (c *Client) Stat(ctx context.Context, ns, name string, dgst digest.Digest) (int64, error) {
	path, t, err := c.blobTarget(ns, name, dgst)
	if err != nil {
		return 0, err
	}
	resp, err := c.do(ctx, t, http.MethodHead, name, path, nil, nil, http.StatusOK)
	if err != nil {
		return 0, err
	}
	drainClose(resp.Body)
	if err := checkDigestHeader(resp, dgst); err != nil {
		return 0, err
	}
	if resp.ContentLength < 0 {
		return 0, unavailablef("HEAD %s@%s: no Content-Length", name, dgst)
	}
	return resp.ContentLength, nil
}

func (c *Client) blobTarget(ns, name string, dgst digest.Digest) (string, *target, error) {
	if err := checkName(name); err != nil {
		return "", nil, err
	}
	if err := dgst.Validate(); err != nil {
		return "", nil, refusedf("invalid digest %q: %v", dgst, err)
	}
	t, err := c.target(ns)
	if err != nil {
		return "", nil, err
	}
	return "/v2/" + name + "/blobs/" + dgst.String(), t, nil
}

// checkDigestHeader fails early when the upstream says outright that it is
// sending some other blob. (CDNs often send no such header; that is fine.)
func checkDigestHeader(resp *http.Response, want digest.Digest) error {
	got := resp.Header.Get("Docker-Content-Digest")
	if got != "" && got != want.String() {
		return unavailablef("digest mismatch: asked for %s, upstream announced %s", want, got)
	}
	return nil
}

// parseContentRange parses "bytes <start>-<end>/<total|*>"; total is -1 for
// "*".
func parseContentRange(v string) (start, end, total int64, err error) {
	rest, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	rng, tot, ok := strings.Cut(strings.TrimSpace(rest), "/")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	s, e, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	start, err1 := strconv.ParseInt(s, 10, 64)
	end, err2 := strconv.ParseInt(e, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || end < start {
		return 0, 0, 0, fmt.Errorf("bad Content-Range %q", v)
	}
	total = -1
	if tot != "*" {
		total, err = strconv.ParseInt(tot, 10, 64)
		if err != nil || total <= end {
			return 0, 0, 0, fmt.Errorf("bad Content-Range %q", v)
		}
	}
	return start, end, total, nil
}

// lengthReader yields exactly remaining bytes (any number when remaining is
// -1): never more, and io.ErrUnexpectedEOF if the body ends early. Other read
// errors are wrapped in ErrUnavailable.
type lengthReader struct {
	rc        io.ReadCloser
	remaining int64
}

func (r *lengthReader) Read(p []byte) (int, error) {
	if r.remaining == 0 {
		return 0, io.EOF
	}
	if r.remaining > 0 && int64(len(p)) > r.remaining {
		p = p[:r.remaining]
	}
	n, err := r.rc.Read(p)
	if r.remaining > 0 {
		r.remaining -= int64(n)
	}
	switch {
	case err == nil:
		return n, nil
	case errors.Is(err, io.EOF):
		if r.remaining > 0 {
			return n, io.ErrUnexpectedEOF
		}
		return n, io.EOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		return n, io.ErrUnexpectedEOF
	default:
		return n, unavailablef("reading blob: %w", err)
	}
}

func (r *lengthReader) Close() error { return r.rc.Close() }
