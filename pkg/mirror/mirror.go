// Package mirror is Shoal's resolution chain: the node's own containerd first,
// then peers, then the upstream registry named by ns. Blobs from anywhere but
// the node itself go through an inflight transfer, which verifies the digest as
// bytes arrive, lets concurrent requests share one fetch, and is the hook by
// which peers will be able to read a blob while it is still being fetched.
package mirror

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/pkg/inflight"
	"github.com/shoalproject/shoal/pkg/metrics"
	"github.com/shoalproject/shoal/pkg/oci"
	"github.com/shoalproject/shoal/pkg/store"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// Source says where bytes came from; it is the metrics label.
type Source string

const (
	SourceLocal    Source = "local"
	SourcePeer     Source = "peer"
	SourceUpstream Source = "upstream"
)

// ErrNotFound is a miss everywhere: the HTTP layer answers a fast 404 so that
// containerd moves on to its next host.
var ErrNotFound = errors.New("not found")

// MaxManifestSize bounds manifests read into memory (distribution-spec's 4 MiB).
const MaxManifestSize = 4 << 20

// Local is the node's own containerd (pkg/store).
type Local interface {
	Resolve(ctx context.Context, registry, name, tag string) (ocispec.Descriptor, error)
	Open(ctx context.Context, dgst digest.Digest) (*store.Blob, error)
	ReadAll(ctx context.Context, dgst digest.Digest, limit int64) ([]byte, error)
}

// Upstream is the registry named by ns (pkg/upstream).
type Upstream interface {
	// accept is the client's Accept header values, so that a registry that
	// negotiates answers as it would answer the client.
	Resolve(ctx context.Context, ns, name, tag string, accept []string) (ocispec.Descriptor, error)
	Manifest(ctx context.Context, ns, name string, dgst digest.Digest, accept []string) ([]byte, string, error)
	Blob(ctx context.Context, ns, name string, dgst digest.Digest, offset int64) (io.ReadCloser, int64, error)
	Stat(ctx context.Context, ns, name string, dgst digest.Digest) (int64, error)
	// Trusted says whether ns's bytes may stream before they verify (https,
	// or loopback) or are held like a peer's.
	Trusted(ns string) bool
}

// Config wires the chain.
type Config struct {
	Local       Local
	Peers       Peers // nil on a node without peer-to-peer
	PeerOptions PeerOptions
	Upstream    Upstream
	Transfers   *inflight.Manager
	// Share says whether a new transfer should spool from its first byte,
	// so that peers can follow it from any offset; nil means never.
	Share   func() bool
	Metrics *metrics.Metrics // optional
	Logger  *slog.Logger
}

// Mirror answers manifest and blob requests.
type Mirror struct {
	local     Local
	peers     *peerClient // nil without peers
	upstream  Upstream
	transfers *inflight.Manager
	share     func() bool
	metrics   *metrics.Metrics
	log       *slog.Logger
}

// New builds the chain.
func New(cfg Config) *Mirror {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Share == nil {
		cfg.Share = func() bool { return false }
	}
	m := &Mirror{local: cfg.Local, upstream: cfg.Upstream, transfers: cfg.Transfers, share: cfg.Share, metrics: cfg.Metrics, log: cfg.Logger}
	if cfg.Peers != nil {
		m.peers = newPeerClient(cfg.Peers, cfg.PeerOptions, cfg.Logger)
	}
	return m
}

// Request is a parsed pull request plus its registry namespace.
type Request struct {
	oci.Request
	NS       string // registry host from ?ns=, validated; empty when absent
	HeadOnly bool   // HEAD: a descriptor is enough, no body needed
	FromPeer bool   // asked by another node: answer from this node only

	// Accept is the client's Accept header values, passed on to the upstream
	// for manifests.
	Accept []string
}

// Manifest is a manifest's bytes (nil for HeadOnly answers) and identity.
type Manifest struct {
	Bytes     []byte
	Digest    digest.Digest
	MediaType string
	Size      int64
	Source    Source
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
	man, perr := m.peers.peerManifest(ctx, TagKey(req.NS, req.Name, req.Tag), req)
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
	b, err := m.local.ReadAll(ctx, dgst, MaxManifestSize)
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
		byDigest := req
		byDigest.Digest, byDigest.Tag = dgst, ""
		man, perr := m.peers.peerManifest(ctx, dgst.String(), byDigest)
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

// Blob is an open blob. Content is an *os.File for local blobs, so that the HTTP
// layer's copy becomes sendfile.
type Blob struct {
	Content io.ReadSeeker
	Size    int64 // -1 when the source did not say
	source  func() Source
	close   func() error
	verify  func(context.Context) error
}

// Source says where the bytes came from; for a transfer it is read at the
// end, since another source may have taken over.
func (b *Blob) Source() Source { return b.source() }

// Close releases the blob.
func (b *Blob) Close() error { return b.close() }

// Verify, called before a response ends, waits until the bytes behind it are
// proven (a transfer verified at the size announced). An error (a digest
// mismatch, a size that was a lie, every source gone) means the HTTP layer
// must abort the connection rather than end the body. Local blobs are
// containerd's own, already verified.
func (b *Blob) Verify(ctx context.Context) error {
	if b.verify == nil {
		return nil
	}
	return b.verify(ctx)
}

// Blob opens a blob from the node, or starts (or joins) a verified transfer
// from peers, then the upstream.
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
	// With no sources (a peer's request) Fetch only joins a transfer in
	// flight: this node shares what it is fetching, and never fetches for others.
	var opts []inflight.Option
	if m.share() {
		opts = append(opts, inflight.Shared())
	}
	r, err := m.transfers.Fetch(ctx, req.Digest, m.remoteSources(req), opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: blob %s: %w", ErrNotFound, req.Digest, errors.Join(lerr, err))
	}
	return &Blob{Content: r, Size: r.Size(), source: func() Source { return Source(r.Source()) }, close: r.Close, verify: r.Verify}, nil
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
		size, err := m.peers.peerBlobSize(ctx, req)
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

// remoteSources lists, in order, where a missing blob may come from: peers
// (untrusted, so first, see inflight.Source), then the upstream.
func (m *Mirror) remoteSources(req Request) []inflight.Source {
	if req.FromPeer {
		return nil
	}
	var srcs []inflight.Source
	if m.peers != nil {
		srcs = append(srcs, &peerBlob{c: m.peers, req: req})
	}
	if req.NS != "" {
		srcs = append(srcs, upstreamSource{m.upstream, req})
	}
	return srcs
}

type upstreamSource struct {
	u   Upstream
	req Request
}

func (s upstreamSource) Kind() string  { return string(SourceUpstream) }
func (s upstreamSource) Trusted() bool { return s.u.Trusted(s.req.NS) }

func (s upstreamSource) Open(ctx context.Context, off int64) (io.ReadCloser, int64, error) {
	return s.u.Blob(ctx, s.req.NS, s.req.Name, s.req.Digest, off)
}
