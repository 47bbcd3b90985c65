package advertiser

import (
	"strings"

	"github.com/shoalproject/shoal/pkg/oci"
)

// TagKey is the routing key for a tag: "<ns>/<name>:<tag>", where ns is the
// registry host as the mirror API receives it in ?ns= (canonical form, see
// oci.ParseNamespace). It is also the containerd image name of a tag pulled
// through CRI, e.g. "docker.io/library/nginx:latest".
func TagKey(ns, name, tag string) string { return ns + "/" + name + ":" + tag }

// TagKeyFromImageName returns the tag key of a containerd image name of the
// form <registry>/<repo>:<tag>. Names pinned to a digest ("repo@sha256:..."),
// bare image IDs ("sha256:<hex>"), untagged names and names without a registry
// host ("library/nginx:latest", as some tools store them) have none: no peer
// asks for them by tag with an ns.
func TagKeyFromImageName(name string) (string, bool) {
	if strings.ContainsRune(name, '@') {
		return "", false
	}
	host, rest, ok := strings.Cut(name, "/")
	// The reference grammar's rule for telling a registry host from the first
	// path component: a dot, a port, or localhost. An IPv6 literal has ':'.
	if !ok || !(strings.ContainsAny(host, ".:") || host == "localhost") {
		return "", false
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return "", false
	}
	repo, tag := rest[:i], rest[i+1:]
	ns, err := oci.ParseNamespace(host)
	if err != nil || oci.ValidateName(repo) != nil || oci.ValidateTag(tag) != nil {
		return "", false
	}
	if len(ns)+1+len(repo) > oci.MaxNameLength {
		return "", false
	}
	return TagKey(ns, repo, tag), true
}
