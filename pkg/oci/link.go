package oci

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrLinkInvalid: a Link header that does not follow RFC 8288.
var ErrLinkInvalid = errors.New("invalid Link header")

// maxLinkHeader bounds the Link field values parsed, in bytes together.
const maxLinkHeader = 64 << 10

// NextLink returns the target (a URI reference, unresolved) of the first link
// whose relation types include "next", in the Link header field values of a
// response (RFC 8288), or "" when no link has that relation. Registries
// paginate tag lists and referrers this way. The whole field is parsed, so a
// malformed value is an error even after a good "next".
func NextLink(values []string) (string, error) {
	total := 0
	for _, v := range values {
		total += len(v)
	}
	if total > maxLinkHeader {
		return "", fmt.Errorf("%w: longer than %d bytes", ErrLinkInvalid, maxLinkHeader)
	}
	next := ""
	for _, v := range values {
		p := linkParser{s: v}
		for {
			p.skip(" \t,")
			if p.i == len(p.s) {
				break
			}
			target, rels, err := p.linkValue()
			if err != nil {
				return "", fmt.Errorf("%w: %v", ErrLinkInvalid, err)
			}
			if next == "" && slices.Contains(rels, "next") {
				next = target
			}
		}
	}
	return next, nil
}

type linkParser struct {
	s string
	i int
}

func (p *linkParser) skip(set string) {
	for p.i < len(p.s) && strings.IndexByte(set, p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *linkParser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

// linkValue reads `<target>` and its parameters, up to the next "," or the
// end, and returns the target and the relation types of its rel parameter
// (lower-cased; the first rel counts, as RFC 8288 says).
func (p *linkParser) linkValue() (string, []string, error) {
	if p.peek() != '<' {
		return "", nil, fmt.Errorf("want '<' at offset %d", p.i)
	}
	end := strings.IndexByte(p.s[p.i:], '>')
	if end < 0 {
		return "", nil, errors.New("unterminated <target>")
	}
	target := p.s[p.i+1 : p.i+end]
	if target == "" || strings.ContainsFunc(target, func(r rune) bool { return r <= ' ' || r >= 0x7f || r == '<' }) {
		return "", nil, errors.New("target is empty or has characters a URI cannot")
	}
	p.i += end + 1
	var rels []string
	relSeen := false
	for {
		p.skip(" \t")
		switch p.peek() {
		case 0, ',':
			return target, rels, nil
		case ';':
			p.i++
		default:
			return "", nil, fmt.Errorf("want ';' or ',' at offset %d", p.i)
		}
		p.skip(" \t")
		name := strings.ToLower(p.token())
		if name == "" {
			return "", nil, fmt.Errorf("want a parameter name at offset %d", p.i)
		}
		p.skip(" \t")
		value := ""
		if p.peek() == '=' {
			p.i++
			p.skip(" \t")
			var err error
			if value, err = p.paramValue(); err != nil {
				return "", nil, err
			}
		}
		if name == "rel" && !relSeen {
			relSeen = true
			rels = strings.Fields(strings.ToLower(value))
		}
	}
}

// token reads an RFC 9110 token.
func (p *linkParser) token() string {
	start := p.i
	for p.i < len(p.s) && isTchar(p.s[p.i]) {
		p.i++
	}
	return p.s[start:p.i]
}

// paramValue reads a token or a quoted-string (unquoted).
func (p *linkParser) paramValue() (string, error) {
	if p.peek() != '"' {
		if v := p.token(); v != "" {
			return v, nil
		}
		return "", fmt.Errorf("want a parameter value at offset %d", p.i)
	}
	p.i++
	var b strings.Builder
	for p.i < len(p.s) {
		c := p.s[p.i]
		p.i++
		if c == '"' {
			return b.String(), nil
		}
		if c == '\\' && p.i < len(p.s) { // quoted-pair
			c = p.s[p.i]
			p.i++
		}
		if c != '\t' && (c < ' ' || c == 0x7f) {
			return "", errors.New("control character in quoted string")
		}
		b.WriteByte(c)
	}
	return "", errors.New("unterminated quoted string")
}

func isTchar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}
