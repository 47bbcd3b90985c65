package oci

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParseNamespace checks that ns is a registry host as the distribution reference
// grammar allows: a DNS name or a bracketed IPv6 literal, with an optional port.
// It returns the lower-cased form, which is the key for --upstream and the
// image store. Whether the host may be contacted is upstream policy, not syntax.
func ParseNamespace(ns string) (string, error) {
	bad := func(why string) (string, error) {
		return "", fmt.Errorf("%w: %q: %s", ErrNSInvalid, truncate(ns), why)
	}
	if ns == "" || len(ns) > 253+6 {
		return bad("length")
	}
	host, port := ns, ""
	if strings.HasPrefix(ns, "[") {
		end := strings.IndexByte(ns, ']')
		if end < 0 {
			return bad("unclosed [")
		}
		host, port = ns[1:end], ns[end+1:]
		if a, err := netip.ParseAddr(host); err != nil || !a.Is6() || a.Zone() != "" {
			return bad("not an IPv6 literal")
		}
		if port != "" && !strings.HasPrefix(port, ":") {
			return bad("junk after ]")
		}
		port = strings.TrimPrefix(port, ":")
	} else if i := strings.LastIndexByte(ns, ':'); i >= 0 {
		host, port = ns[:i], ns[i+1:]
		if !validDomain(host) {
			return bad("not a host name")
		}
	} else if !validDomain(host) {
		return bad("not a host name")
	}
	if port != "" || strings.HasSuffix(ns, ":") {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '0' {
			return bad("bad port")
		}
	}
	return strings.ToLower(ns), nil
}

// validDomain: labels of [A-Za-z0-9] with inner hyphens, joined by dots.
func validDomain(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			b := l[i] | 0x20 // fold case for letters
			if !(b >= 'a' && b <= 'z' || l[i] >= '0' && l[i] <= '9' || l[i] == '-') {
				return false
			}
		}
	}
	return true
}
