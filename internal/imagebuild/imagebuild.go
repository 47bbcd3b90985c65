// Package imagebuild assembles single-layer OCI images from files, without a
// container engine: the Shoal image on a machine with no Docker (hack/image,
// `make image`), and the end-to-end tests' pause, workload and kubectl images.
//
// Builds are reproducible: every tar entry and the config carry one fixed
// time, so the same files give the same digest.
package imagebuild

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"path"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// File is one entry of the image's filesystem. Paths are absolute inside the
// image; a Dir has no Data. Parent directories are added (root, 0755) when
// not listed.
type File struct {
	Path     string
	Mode     int64 // permission bits, e.g. 0o755; 0 means 0o644 (0o755 for a Dir)
	UID, GID int
	Dir      bool
	Data     []byte
}

// Spec is an image: its files (one layer, plus any extra layers) and config.
type Spec struct {
	Files       []File
	ExtraLayers [][]File // more layers after the first, e.g. filler content
	Entrypoint  []string
	Cmd         []string
	Env         []string
	User        string
	WorkingDir  string
	Labels      map[string]string
	OS, Arch    string    // default linux/amd64
	Created     time.Time // default the Unix epoch, for reproducible digests
}

// Build assembles the image.
func Build(s Spec) (v1.Image, error) {
	created := s.Created
	if created.IsZero() {
		created = time.Unix(0, 0).UTC()
	}
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	var layers []v1.Layer
	for _, files := range append([][]File{s.Files}, s.ExtraLayers...) {
		if len(files) == 0 {
			continue
		}
		tb, err := tarFiles(files, created)
		if err != nil {
			return nil, err
		}
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(tb)), nil
		}, tarball.WithMediaType(types.OCILayer), tarball.WithCompressedCaching)
		if err != nil {
			return nil, err
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = s.OS, s.Arch
	if cf.OS == "" {
		cf.OS = "linux"
	}
	if cf.Architecture == "" {
		cf.Architecture = "amd64"
	}
	cf.Created = v1.Time{Time: created}
	cf.Config = v1.Config{
		Entrypoint: s.Entrypoint,
		Cmd:        s.Cmd,
		Env:        s.Env,
		User:       s.User,
		WorkingDir: s.WorkingDir,
		Labels:     s.Labels,
	}
	return mutate.ConfigFile(img, cf)
}

// tarFiles writes files (and missing parent directories) as an
// uncompressed tar, parents first, in path order.
func tarFiles(files []File, mtime time.Time) ([]byte, error) {
	entries := map[string]File{}
	for _, f := range files {
		p := path.Clean("/" + f.Path)
		if p == "/" {
			return nil, fmt.Errorf("imagebuild: a file needs a path below /")
		}
		if _, dup := entries[p]; dup {
			return nil, fmt.Errorf("imagebuild: %s listed twice", p)
		}
		f.Path = p
		entries[p] = f
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := entries[d]; !ok {
				entries[d] = File{Path: d, Dir: true}
			}
		}
	}
	paths := make([]string, 0, len(entries))
	for p := range entries {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := entries[p]
		h := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Mode:    f.Mode,
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: mtime,
			Format:  tar.FormatPAX,
		}
		if f.Dir {
			h.Typeflag, h.Name = tar.TypeDir, h.Name+"/"
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.Data))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if !f.Dir {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteLayout adds img to the OCI image layout at dir (created when
// missing), annotated with ref as its name.
func WriteLayout(dir string, img v1.Image, ref string) error {
	p, err := layout.FromPath(dir)
	if err != nil {
		if p, err = layout.Write(dir, empty.Index); err != nil {
			return err
		}
	}
	return p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": ref,
	}))
}

// WriteTarball writes img as a `docker load`/`ctr import` tarball named ref.
func WriteTarball(file string, img v1.Image, ref string) error {
	r, err := name.ParseReference(ref)
	if err != nil {
		return err
	}
	return tarball.WriteToFile(file, r, img)
}

// Push uploads img as ref. insecure allows plain HTTP (a test registry).
func Push(ref string, img v1.Image, insecure bool, opts ...remote.Option) error {
	var nopts []name.Option
	if insecure {
		nopts = append(nopts, name.Insecure)
	}
	r, err := name.ParseReference(ref, nopts...)
	if err != nil {
		return err
	}
	return remote.Write(r, img, opts...)
}

// Size is what an image weighs: unpacked (the layers' tar size) and to pull
// (compressed layers, config and manifest).
type Size struct {
	Unpacked   int64
	Compressed int64
}

// Measure returns img's sizes.
func Measure(img v1.Image) (Size, error) {
	var s Size
	layers, err := img.Layers()
	if err != nil {
		return s, err
	}
	for _, l := range layers {
		n, err := l.Size()
		if err != nil {
			return s, err
		}
		s.Compressed += n
		rc, err := l.Uncompressed()
		if err != nil {
			return s, err
		}
		u, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil {
			return s, err
		}
		s.Unpacked += u
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		return s, err
	}
	m, err := img.RawManifest()
	if err != nil {
		return s, err
	}
	s.Compressed += int64(len(cfg) + len(m))
	return s, nil
}
