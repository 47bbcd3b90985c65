// Command image builds the Shoal container image without a container engine:
// `make image` runs it where no Docker engine answers. The image matches the
// Dockerfile's: the static, version-stamped binary at /shoal on an empty base
// with what distroless/static carries and Shoal uses (CA certificates, an
// /etc/passwd with root, nobody and nonroot, nsswitch.conf, a 1777 /tmp).
// Like the Dockerfile's it runs as root: containerd's socket and store are
// root-owned, and the chart drops every capability.
//
//	go run ./hack/image -binary bin/shoal -ref ghcr.io/shoalproject/shoal:dev \
//	    [-oci-layout DIR] [-tarball FILE] [-push] [-insecure]
//
// It prints the image's digest and sizes.
package main

import (
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoalproject/shoal/internal/imagebuild"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run() error {
	binary := flag.String("binary", "bin/shoal", "the static shoal binary (make build)")
	ref := flag.String("ref", "", "image name, e.g. ghcr.io/shoalproject/shoal:dev (required)")
	caBundle := flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "CA certificates to install at /etc/ssl/certs/ca-certificates.crt")
	version := flag.String("version", "dev", "org.opencontainers.image.version label")
	commit := flag.String("commit", "unknown", "org.opencontainers.image.revision label")
	ociLayout := flag.String("oci-layout", "", "write the image into this OCI image layout directory")
	tarFile := flag.String("tarball", "", "write the image as a tarball (ctr import, docker load)")
	push := flag.Bool("push", false, "push the image to -ref's registry (credentials from ~/.docker/config.json)")
	insecure := flag.Bool("insecure", false, "allow plain HTTP to the registry")
	flag.Parse()
	if *ref == "" {
		return fmt.Errorf("-ref is required")
	}
	if *ociLayout == "" && *tarFile == "" && !*push {
		return fmt.Errorf("nothing to do: give -oci-layout, -tarball or -push")
	}
	bin, err := os.ReadFile(*binary)
	if err != nil {
		return err
	}
	cas, err := os.ReadFile(*caBundle)
	if err != nil {
		return fmt.Errorf("CA certificates: %w", err)
	}
	img, err := imagebuild.Build(imagebuild.Spec{
		Files: ShoalFiles(bin, cas),
		// Like the Dockerfile: `docker run IMAGE` is `shoal run`.
		Entrypoint: []string{"/shoal"},
		Cmd:        []string{"run"},
		Env:        []string{"PATH=/usr/local/bin:/usr/bin:/bin", "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"},
		Labels: map[string]string{
			"org.opencontainers.image.source":   "https://github.com/shoalproject/shoal",
			"org.opencontainers.image.version":  *version,
			"org.opencontainers.image.revision": *commit,
		},
	})
	if err != nil {
		return err
	}
	if *ociLayout != "" {
		if err := imagebuild.WriteLayout(*ociLayout, img, *ref); err != nil {
			return fmt.Errorf("OCI layout: %w", err)
		}
	}
	if *tarFile != "" {
		if err := imagebuild.WriteTarball(*tarFile, img, *ref); err != nil {
			return fmt.Errorf("tarball: %w", err)
		}
	}
	if *push {
		if err := imagebuild.Push(*ref, img, *insecure, remote.WithAuthFromKeychain(authn.DefaultKeychain)); err != nil {
			return fmt.Errorf("push: %w", err)
		}
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	size, err := imagebuild.Measure(img)
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s unpacked=%d compressed=%d\n", *ref, d, size.Unpacked, size.Compressed)
	return nil
}

// ShoalFiles is the image's filesystem: distroless/static's accounts and
// certificates, and the binary.
func ShoalFiles(bin, caBundle []byte) []imagebuild.File {
	passwd := strings.Join([]string{
		"root:x:0:0:root:/root:/sbin/nologin",
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin",
		"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin",
	}, "\n") + "\n"
	group := "root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"
	return []imagebuild.File{
		{Path: "/shoal", Mode: 0o755, Data: bin},
		{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: caBundle},
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(passwd)},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(group)},
		{Path: "/etc/nsswitch.conf", Mode: 0o644, Data: []byte("hosts: files dns\n")},
		{Path: "/root", Dir: true, Mode: 0o700},
		{Path: "/home/nonroot", Dir: true, Mode: 0o700, UID: 65532, GID: 65532},
		{Path: "/tmp", Dir: true, Mode: 0o1777},
	}
}
