package upstream

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DNS limits; the reference grammar has none, but no real registry host
// exceeds them and they keep garbage out of logs and lookups.
const (
	maxHostLen  = 253
	maxLabelLen = 63
)

// normalizeNS checks that ns is a registry host as the distribution reference
// grammar defines it (dot-separated domain components or a bracketed IPv6
// literal, optional :port) and returns its canonical lookup key: lower-cased,
// IPv6 literals in netip's canonical form.
//
// On top of the grammar it refuses a domain whose last label is all digits
// unless the whole host is a dotted-quad IPv4 address: no TLD is numeric, and
// forms like "127.1" or "2130706433" are read as IPv4 by some resolvers.
func normalizeNS(ns string) (string, error) {
	if ns == "" {
		return "", errors.New("empty")
	}
	host, port, hasPort := ns, "", false
	if strings.HasPrefix(ns, "[") {
		end := strings.IndexByte(ns, ']')
		if end < 0 {
			return "", errors.New("unterminated IPv6 literal")
		}
		lit, rest := ns[1:end], ns[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return "", errors.New("unexpected text after IPv6 literal")
			}
			port, hasPort = rest[1:], true
		}
		addr, err := netip.ParseAddr(lit)
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", fmt.Errorf("invalid IPv6 literal %q", lit)
		}
		host = "[" + addr.String() + "]"
	} else {
		if i := strings.LastIndexByte(ns, ':'); i >= 0 {
			host, port, hasPort = ns[:i], ns[i+1:], true
		}
		if err := checkDomain(host); err != nil {
			return "", err
		}
		host = strings.ToLower(host)
	}
	if !hasPort {
		return host, nil
	}
	if err := checkPort(port); err != nil {
		return "", err
	}
	return host + ":" + port, nil
}

func checkDomain(host string) error {
	if host == "" {
		return errors.New("empty host")
	}
	if len(host) > maxHostLen {
		return fmt.Errorf("host longer than %d characters", maxHostLen)
	}
	labels := strings.Split(host, ".")
	for _, l := range labels {
		if l == "" || len(l) > maxLabelLen {
			return fmt.Errorf("host label must be 1-%d characters", maxLabelLen)
		}
		if !isAlnum(l[0]) || !isAlnum(l[len(l)-1]) {
			return fmt.Errorf("host label %q must start and end with a letter or digit", l)
		}
		for i := 0; i < len(l); i++ {
			if !isAlnum(l[i]) && l[i] != '-' {
				return fmt.Errorf("invalid character %q in host", l[i])
			}
		}
	}
	if allDigits(labels[len(labels)-1]) {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is4() {
			return errors.New("numeric host that is not a dotted-quad IPv4 address")
		}
	}
	return nil
}

// checkPort accepts 1-65535 written without leading zeros, so each port has
// one spelling and one lookup key.
func checkPort(p string) error {
	if p == "" || len(p) > 5 || p[0] == '0' || !allDigits(p) {
		return fmt.Errorf("invalid port %q", p)
	}
	if n, err := strconv.Atoi(p); err != nil || n > 65535 {
		return fmt.Errorf("invalid port %q", p)
	}
	return nil
}

// nsHost returns the host part of a normalized ns, without brackets.
func nsHost(key string) string {
	if strings.HasPrefix(key, "[") {
		return key[1:strings.IndexByte(key, ']')]
	}
	if i := strings.LastIndexByte(key, ':'); i >= 0 {
		return key[:i]
	}
	return key
}

// checkName defends the URL path against a caller that forgot to validate:
// repository names are slash-separated components of [a-z0-9._-] that start
// and end alphanumerically, so nothing needs escaping and "." or ".." cannot
// appear.
func checkName(name string) error {
	if name == "" || len(name) > 255 {
		return refusedf("invalid repository name %q", name)
	}
	for _, comp := range strings.Split(name, "/") {
		if comp == "" || !isLowerAlnum(comp[0]) || !isLowerAlnum(comp[len(comp)-1]) {
			return refusedf("invalid repository name %q", name)
		}
		for i := 0; i < len(comp); i++ {
			if c := comp[i]; !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
				return refusedf("invalid repository name %q", name)
			}
		}
	}
	return nil
}

// checkTag applies the reference grammar: [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}.
func checkTag(tag string) error {
	if tag == "" || len(tag) > 128 || tag[0] == '.' || tag[0] == '-' {
		return refusedf("invalid tag %q", tag)
	}
	for i := 0; i < len(tag); i++ {
		if c := tag[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return refusedf("invalid tag %q", tag)
		}
	}
	return nil
}

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

func isLowerAlnum(c byte) bool { return c >= 'a' && c <= 'z' || c >= '0' && c <= '9' }

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
