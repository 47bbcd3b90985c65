package oci

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// DNS limits: the reference grammar has none, but no real registry host
// exceeds them and they keep garbage out of logs and lookups.
const (
	maxHostLen  = 253
	maxLabelLen = 63
)

// ParseNamespace checks that ns is a registry host as the distribution
// reference grammar defines it (dot-separated domain components, or a
// bracketed IPv6 literal, with an optional port) and returns its canonical
// form: lower-cased, IPv6 literals in netip's canonical form, so that each
// registry has one key for --upstream and the image store. Whether the host
// may be contacted is upstream policy, not syntax.
//
// On top of the grammar it refuses a domain whose last label is all digits
// unless the whole host is a dotted-quad IPv4 address (no TLD is numeric, and
// "127.1" or "2130706433" are read as IPv4 by some resolvers), and ports with
// leading zeros (one spelling per port).
func ParseNamespace(ns string) (string, error) {
	key, err := parseNamespace(ns)
	if err != nil {
		return "", fmt.Errorf("%w %q: %w", ErrNSInvalid, truncate(ns), err)
	}
	return key, nil
}

func parseNamespace(ns string) (string, error) {
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
			return "", errors.New("invalid IPv6 literal")
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
	if err := CheckPort(port); err != nil {
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
		for i := 0; i < len(l); i++ {
			c := l[i]
			alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
			if !alnum && (c != '-' || i == 0 || i == len(l)-1) {
				return errors.New("host labels are letters, digits and inner hyphens")
			}
		}
	}
	if last := labels[len(labels)-1]; strings.Trim(last, "0123456789") == "" {
		if a, err := netip.ParseAddr(host); err != nil || !a.Is4() {
			return errors.New("numeric host that is not a dotted-quad IPv4 address")
		}
	}
	return nil
}

// CheckPort accepts 1-65535 written without leading zeros.
func CheckPort(p string) error {
	n, err := strconv.Atoi(p)
	if err != nil || p[0] == '0' || p[0] == '+' || n < 1 || n > 65535 {
		return fmt.Errorf("invalid port %q", truncate(p))
	}
	return nil
}

// NamespaceHost returns the host of a canonical ns, without brackets or port.
func NamespaceHost(key string) string {
	if strings.HasPrefix(key, "[") {
		return key[1:strings.IndexByte(key, ']')]
	}
	if i := strings.LastIndexByte(key, ':'); i >= 0 {
		return key[:i]
	}
	return key
}
