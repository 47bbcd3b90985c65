package upstream

import (
	"github.com/shoalproject/shoal/pkg/oci"
)

// normalizeNS is the ns lookup key; the grammar lives in pkg/oci, shared with
// the HTTP layer, so that both agree on what a registry host is.
func normalizeNS(ns string) (string, error) { return oci.ParseNamespace(ns) }

// nsHost returns the host part of a normalized ns, without brackets.
func nsHost(key string) string { return oci.NamespaceHost(key) }

// checkPort accepts 1-65535 written without leading zeros.
func checkPort(p string) error { return oci.CheckPort(p) }

// checkName defends the URL path against a caller that forgot to validate:
// with the distribution grammar nothing needs escaping and "." or ".."
// cannot appear.
func checkName(name string) error {
	if err := oci.ValidateName(name); err != nil {
		return refusedf("%v", err)
	}
	return nil
}

// checkTag applies the reference grammar: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
func checkTag(tag string) error {
	if err := oci.ValidateTag(tag); err != nil {
		return refusedf("%v", err)
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
