package peer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/oci"
)

// ManifestRequest names a manifest to fetch from peers.
type ManifestRequest struct {
	Key    string        // routing key: the digest, or the tag key
	Name   string        // repository
	Digest digest.Digest // by digest; empty for a tag
	Tag    string
	NS     string // with a tag: the registry the tag is of
	// Check validates the verified bytes (is it a manifest at all); a peer
	// whose answer fails it is a liar.
	Check func([]byte) error
}

// Manifest fetches a manifest from the providers of req.Key and returns the
// first answer whose bytes hash to the digest (the one asked for, or, for a
// tag, the one the peer declares), with its Content-Type.
func (c *Client) Manifest(ctx context.Context, req ManifestRequest) ([]byte, digest.Digest, string, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	provs := collect(ctx, c.finder.Find(ctx, req.Key))
	ref := req.Digest.String()
	if req.Digest == "" {
		ref = req.Tag
	}
	url := func(p Provider) string {
		u := strings.TrimSuffix(p.URL, "/") + "/v2/" + req.Name + "/manifests/" + ref
		if req.Digest == "" {
			u += "?ns=" + req.NS
		}
		return u
	}
	for {
		resp, p, done, err := c.race(ctx, provs, func(ctx context.Context, p Provider) (*http.Response, error) {
			return c.get(ctx, c.lim.PeerHeaders, p, http.MethodGet, url(p), nil, http.StatusOK)
		})
		if err != nil {
			return nil, "", "", err
		}
		body := c.guard(resp.Body, done) // a trickling peer must not hold the request
		b, rerr := io.ReadAll(io.LimitReader(body, c.lim.MaxManifestSize+1))
		body.Close()
		dgst := req.Digest
		if dgst == "" {
			dgst, _ = oci.ParseDigest(resp.Header.Get("Docker-Content-Digest"))
		}
		var bad error
		switch {
		case rerr != nil:
			c.blame(p, Slow, rerr)
			continue
		case int64(len(b)) > c.lim.MaxManifestSize:
			bad = errors.New("manifest over the size limit")
		case dgst == "":
			bad = errors.New("no digest for the tag")
		case digest.FromBytes(b) != dgst:
			bad = fmt.Errorf("bytes hash to %s, not %s", digest.FromBytes(b), dgst)
		case req.Check != nil:
			bad = req.Check(b)
		}
		if bad == nil {
			return b, dgst, resp.Header.Get("Content-Type"), nil
		}
		c.blame(p, Liar, fmt.Errorf("manifest %s: %w", req.Key, bad))
	}
}

// BlobSize answers HEAD from the first provider that knows the blob.
func (c *Client) BlobSize(ctx context.Context, name string, d digest.Digest) (int64, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	provs := collect(ctx, c.finder.Find(ctx, d.String()))
	resp, _, done, err := c.race(ctx, provs, func(ctx context.Context, p Provider) (*http.Response, error) {
		resp, err := c.get(ctx, c.lim.PeerHeaders, p, http.MethodHead, blobURL(p.URL, name, d), nil, http.StatusOK)
		if err == nil && resp.ContentLength < 0 {
			resp.Body.Close()
			return nil, errors.New("no Content-Length")
		}
		return resp, err
	})
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	done()
	return resp.ContentLength, nil
}
