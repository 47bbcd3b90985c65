package mirror

import (
	"context"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/oci"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// The resolution chain. Every decision about where a request is answered
// from is in this file.
//
//	request                       answered from, in order
//	blob (containerd)             local store; a transfer in flight; a new transfer from
//	                              peers that have it or are receiving it, the swarm
//	                              (follow a node receiving it, or fetch), the upstream
//	blob (a peer)                 local store; a transfer in flight (as a relay, capped)
//	manifest by digest            local store; peers; the upstream
//	manifest by tag (containerd)  the upstream; if unreachable, the local store; then peers
//	manifest (a peer)             the local store only
//
// A peer's request never reaches peers or the upstream, so requests cannot
// loop between nodes. Misses everywhere are ErrNotFound: a fast 404.

// Blob opens a blob.
func (m *Mirror) Blob(ctx context.Context, req Request) (*Blob, error) {
	b, lerr := m.local.Open(ctx, req.Digest)
	if lerr == nil {
		return &Blob{Content: b.Content, Size: b.Size, source: func() Source { return SourceLocal }, close: b.Close}, nil
	}
	if errors.Is(lerr, store.ErrNotFound) {
		lerr = nil // a plain miss
	} else {
		m.log.Warn("local blob open failed; trying elsewhere", "digest", req.Digest, "err", lerr)
	}
	var sources []inflight.Source
	var opts []inflight.Option
	if req.FromPeer {
		// Only a transfer in flight here: this node shares what it is
		// fetching, and never fetches for others.
		opts = append(opts, inflight.Relay(m.lim.SwarmRelayReaders))
	} else {
		sources = m.blobSources(req)
		if m.share() {
			opts = append(opts, inflight.Shared())
		}
	}
	r, err := m.transfers.Fetch(ctx, req.Digest, sources, opts...)
	if err != nil {
		// Every cause stays wrapped, so that the HTTP layer can tell a
		// failure (containerd down, an unreachable upstream) from a miss.
		return nil, fmt.Errorf("%w: blob %s: %w", ErrNotFound, req.Digest, errors.Join(lerr, err))
	}
	return &Blob{Content: r, Size: r.Size(), source: func() Source { return Source(r.Source()) }, close: r.Close, verify: r.Verify}, nil
}

// blobSources lists where a missing blob may come from: peers (untrusted,
// so first, see inflight.Source), then the upstream.
func (m *Mirror) blobSources(req Request) []inflight.Source {
	var srcs []inflight.Source
	if m.peers != nil {
		srcs = append(srcs, m.peers.BlobSources(req.Name, req.Digest, req.NS != "")...)
	}
	if req.NS != "" {
		srcs = append(srcs, upstreamSource{m.upstream, req})
	}
	return srcs
}

// BlobSize answers HEAD without fetching the blob.
func (m *Mirror) BlobSize(ctx context.Context, req Request) (int64, Source, error) {
	b, lerr := m.local.Open(ctx, req.Digest)
	if lerr == nil {
		b.Close()
		return b.Size, SourceLocal, nil
	}
	if req.FromPeer {
		return 0, "", fmt.Errorf("%w: blob %s", ErrNotFound, req.Digest)
	}
	var errs []error
	if !errors.Is(lerr, store.ErrNotFound) {
		errs = append(errs, lerr)
	}
	if m.peers != nil {
		size, err := m.peers.BlobSize(ctx, req.Name, req.Digest)
		if err == nil {
			return size, SourcePeer, nil
		}
		errs = append(errs, err)
	}
	if req.NS == "" {
		return 0, "", fmt.Errorf("%w: blob %s is not on this node or its peers, and no ns names an upstream: %w", ErrNotFound, req.Digest, errors.Join(errs...))
	}
	size, err := m.upstream.Stat(ctx, req.NS, req.Name, req.Digest)
	if err != nil {
		return 0, "", fmt.Errorf("%w: blob %s: %w", ErrNotFound, req.Digest, errors.Join(append(errs, err)...))
	}
	return size, SourceUpstream, nil
}

// Manifest reads a manifest by digest, or resolves a tag first.
func (m *Mirror) Manifest(ctx context.Context, req Request) (*Manifest, error) {
	if req.Digest == "" {
		return m.manifestByTag(ctx, req)
	}
	return m.manifestByDigest(ctx, req, req.Digest)
}

// manifestByTag asks the upstream first, because only it knows where a tag
// points now. When it cannot be reached, the node's own image store answers,
// then the tag as peers advertise it.
func (m *Mirror) manifestByTag(ctx context.Context, req Request) (*Manifest, error) {
	if req.NS == "" {
		return nil, fmt.Errorf("%w: a tag needs ns to name its registry", ErrNotFound)
	}
	var uerr error
	if !req.FromPeer {
		desc, err := m.upstream.Resolve(ctx, req.NS, req.Name, req.Tag, req.Accept)
		switch {
		case err == nil:
			if req.HeadOnly && desc.MediaType != "" && desc.Size > 0 {
				return &Manifest{Digest: desc.Digest, MediaType: desc.MediaType, Size: desc.Size, Source: SourceUpstream}, nil
			}
			return m.manifestByDigest(ctx, req, desc.Digest)
		case errors.Is(err, upstream.ErrNotFound):
			// The upstream says the tag does not exist (or needs credentials
			// we lack): a copy elsewhere could be stale or private, so
			// containerd decides, with its own credentials.
			return nil, fmt.Errorf("%w: tag %s: %w", ErrNotFound, req.Tag, err)
		}
		uerr = err
	}
	local, lerr := m.local.Resolve(ctx, req.NS, req.Name, req.Tag)
	if lerr == nil {
		if !req.FromPeer {
			m.log.Info("tag resolved from the local store; upstream unavailable",
				"ns", req.NS, "name", req.Name, "tag", req.Tag, "digest", local.Digest, "upstream_err", uerr)
		}
		return m.manifestByDigest(ctx, req, local.Digest)
	}
	if req.FromPeer {
		return nil, fmt.Errorf("%w: tag %s: local: %w", ErrNotFound, req.Tag, lerr)
	}
	// Every cause stays wrapped, so that the HTTP layer can tell a failure
	// (an unreachable upstream, containerd down) from a plain miss.
	if m.peers == nil {
		return nil, fmt.Errorf("%w: tag %s: upstream: %w; local: %w", ErrNotFound, req.Tag, uerr, lerr)
	}
	man, perr := m.peerManifest(ctx, peer.ManifestRequest{Key: TagKey(req.NS, req.Name, req.Tag),
		Name: req.Name, Tag: req.Tag, NS: req.NS})
	if perr != nil {
		return nil, fmt.Errorf("%w: tag %s: upstream: %w; local: %w; peers: %w", ErrNotFound, req.Tag, uerr, lerr, perr)
	}
	m.log.Warn("tag served as a peer advertises it; upstream unavailable",
		"ns", req.NS, "name", req.Name, "tag", req.Tag, "digest", man.Digest, "upstream_err", uerr)
	if m.metrics != nil {
		m.metrics.PeerTags.Inc()
	}
	return man, nil
}

// TagKey is the routing key under which nodes advertise a tag: the containerd
// image name, "<ns>/<name>:<tag>".
func TagKey(ns, name, tag string) string { return ns + "/" + name + ":" + tag }

// manifestByDigest reads from the node, then peers, then the upstream.
func (m *Mirror) manifestByDigest(ctx context.Context, req Request, dgst digest.Digest) (*Manifest, error) {
	b, err := m.local.ReadAll(ctx, dgst, m.lim.MaxManifestSize)
	if err == nil {
		return manifest(b, dgst, "", SourceLocal)
	}
	if !errors.Is(err, store.ErrNotFound) {
		m.log.Warn("local manifest read failed; trying elsewhere", "digest", dgst, "err", err)
	}
	if req.FromPeer {
		return nil, fmt.Errorf("%w: manifest %s", ErrNotFound, dgst)
	}
	errs := []error{err}
	if m.peers != nil {
		man, perr := m.peerManifest(ctx, peer.ManifestRequest{Key: dgst.String(), Name: req.Name, Digest: dgst})
		if perr == nil {
			return man, nil
		}
		errs = append(errs, perr)
	}
	if req.NS == "" {
		return nil, fmt.Errorf("%w: manifest %s: no ns names an upstream: %w", ErrNotFound, dgst, errors.Join(errs...))
	}
	b, mediaType, err := m.upstream.Manifest(ctx, req.NS, req.Name, dgst, req.Accept)
	if err != nil {
		return nil, fmt.Errorf("%w: manifest %s: %w", ErrNotFound, dgst, errors.Join(append(errs, err)...))
	}
	return manifest(b, dgst, mediaType, SourceUpstream)
}

// peerManifest asks peers; what they send must verify and be a manifest.
func (m *Mirror) peerManifest(ctx context.Context, req peer.ManifestRequest) (*Manifest, error) {
	req.Check = func(b []byte) error { _, err := oci.DetectManifestType(b); return err }
	b, dgst, ct, err := m.peers.Manifest(ctx, req)
	if err != nil {
		return nil, err
	}
	return manifest(b, dgst, ct, SourcePeer)
}

// manifest checks that b is a manifest and fills in its media type.
func manifest(b []byte, dgst digest.Digest, mediaType string, src Source) (*Manifest, error) {
	detected, err := oci.DetectManifestType(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %s is not a manifest: %w", ErrNotFound, dgst, err)
	}
	if mediaType == "" || mediaType == "application/octet-stream" {
		mediaType = detected
	}
	return &Manifest{Bytes: b, Digest: dgst, MediaType: mediaType, Size: int64(len(b)), Source: src}, nil
}
