package harness

import (
	"archive/tar"
	"compress/gzip"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Blob is a content descriptor: digest and size in bytes.
type Blob struct {
	Digest digest.Digest
	Size   int64
}

// Image describes an image: its manifest, config and layers.
type Image struct {
	Ref       string        // host:port/repo:tag on the registry it was pushed to
	Repo, Tag string        // repository and tag
	Digest    digest.Digest // manifest digest
	MediaType string        // manifest media type (OCI image manifest)
	Manifest  Blob          // manifest digest and size
	Config    Blob
	Layers    []Blob // compressed layer blobs, in manifest order
}

// RefIn returns repo:tag under another registry host, e.g. the name that
// containerd resolves through hosts.toml: img.RefIn("registry.shoal.test").
func (img Image) RefIn(host string) string { return host + "/" + img.Repo + ":" + img.Tag }

// DigestRefIn returns repo@digest under another registry host.
func (img Image) DigestRefIn(host string) string {
	return host + "/" + img.Repo + "@" + img.Digest.String()
}

// Blobs returns the manifest, config and layers: everything a pull stores.
func (img Image) Blobs() []Blob { return append([]Blob{img.Manifest, img.Config}, img.Layers...) }

// WriteRandomLayout writes an OCI image layout in dir holding one image for
// linux/GOARCH with n layers. Each layer is a tar with one file of
// layerSize random bytes, stored in an uncompressed gzip stream, so its
// blob is a little larger than layerSize and every image is unique.
func WriteRandomLayout(dir string, n int, layerSize int64) (Image, error) {
	blobs := filepath.Join(dir, "blobs", "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return Image{}, err
	}
	var seed [32]byte
	crand.Read(seed[:])
	rng := rand.NewChaCha8(seed)

	var img Image
	var diffIDs []digest.Digest
	var descs []ocispec.Descriptor
	for i := 0; i < n; i++ {
		b, diffID, err := writeRandomLayer(blobs, rng, i, layerSize)
		if err != nil {
			return Image{}, err
		}
		img.Layers = append(img.Layers, b)
		diffIDs = append(diffIDs, diffID)
		descs = append(descs, ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: b.Digest, Size: b.Size})
	}
	created := time.Now().UTC()
	cfg := ocispec.Image{
		Created:  &created,
		Platform: ocispec.Platform{OS: "linux", Architecture: runtime.GOARCH},
		RootFS:   ocispec.RootFS{Type: "layers", DiffIDs: diffIDs},
	}
	cfgBlob, err := writeJSONBlob(blobs, cfg)
	if err != nil {
		return Image{}, err
	}
	img.Config = cfgBlob
	m := ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: cfgBlob.Digest, Size: cfgBlob.Size},
		Layers:    descs,
	}
	mBlob, err := writeJSONBlob(blobs, m)
	if err != nil {
		return Image{}, err
	}
	img.Manifest, img.Digest, img.MediaType = mBlob, mBlob.Digest, ocispec.MediaTypeImageManifest
	idx := ocispec.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageIndex,
		Manifests: []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageManifest, Digest: mBlob.Digest, Size: mBlob.Size}},
	}
	if err := writeJSON(filepath.Join(dir, "index.json"), idx); err != nil {
		return Image{}, err
	}
	if err := writeJSON(filepath.Join(dir, ocispec.ImageLayoutFile), ocispec.ImageLayout{Version: ocispec.ImageLayoutVersion}); err != nil {
		return Image{}, err
	}
	return img, nil
}

// writeRandomLayer streams one layer into blobs and returns the blob and
// the diff ID (digest of the uncompressed tar).
func writeRandomLayer(blobs string, rng io.Reader, i int, size int64) (Blob, digest.Digest, error) {
	f, err := os.CreateTemp(blobs, "layer-")
	if err != nil {
		return Blob{}, "", err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	blobHash := sha256.New()
	cw := &countWriter{w: io.MultiWriter(f, blobHash)}
	gz, _ := gzip.NewWriterLevel(cw, gzip.NoCompression)
	diffHash := sha256.New()
	tw := tar.NewWriter(io.MultiWriter(gz, diffHash))
	hdr := &tar.Header{Name: fmt.Sprintf("random-%d.bin", i), Mode: 0o644, Size: size, Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		return Blob{}, "", err
	}
	if _, err := io.CopyN(tw, rng, size); err != nil {
		return Blob{}, "", err
	}
	if err := tw.Close(); err != nil {
		return Blob{}, "", err
	}
	if err := gz.Close(); err != nil {
		return Blob{}, "", err
	}
	if err := f.Close(); err != nil {
		return Blob{}, "", err
	}
	d := sumDigest(blobHash)
	if err := os.Rename(f.Name(), filepath.Join(blobs, d.Encoded())); err != nil {
		return Blob{}, "", err
	}
	return Blob{Digest: d, Size: cw.n}, sumDigest(diffHash), nil
}

func writeJSONBlob(blobs string, v any) (Blob, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Blob{}, err
	}
	d := digest.FromBytes(b)
	if err := os.WriteFile(filepath.Join(blobs, d.Encoded()), b, 0o644); err != nil {
		return Blob{}, err
	}
	return Blob{Digest: d, Size: int64(len(b))}, nil
}

func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}

func sumDigest(h hash.Hash) digest.Digest {
	return digest.NewDigestFromBytes(digest.SHA256, h.Sum(nil))
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
