package upstream

import "strings"

// challenge is one auth challenge from a WWW-Authenticate header (RFC 9110
// section 11.6.1): a scheme and its auth-params, both keys and scheme
// lower-cased.
type challenge struct {
	scheme string
	params map[string]string
}

// bearerChallenge returns the first Bearer challenge among the header values.
func bearerChallenge(values []string) (challenge, bool) {
	for _, v := range values {
		for _, ch := range parseChallenges(v) {
			if ch.scheme == "bearer" {
				return ch, true
			}
		}
	}
	return challenge{}, false
}

// parseChallenges parses one WWW-Authenticate value, which may hold several
// comma-separated challenges. It is lenient (registries are not always
// careful) and never fails; input it cannot make sense of is skipped. Every
// loop iteration consumes input, so it always terminates.
func parseChallenges(h string) []challenge {
	var out []challenge
	i := 0
	for {
		i = skipSpaceComma(h, i)
		if i >= len(h) {
			return out
		}
		scheme, j := readToken(h, i)
		if j == i {
			i++ // not a token: skip the byte
			continue
		}
		ch := challenge{scheme: strings.ToLower(scheme), params: map[string]string{}}
		i = j
		for {
			k := skipSpace(h, i)
			name, n := readToken(h, k)
			if n == k {
				i = k
				break
			}
			if strings.HasPrefix(h[n:], "==") { // token68 padding (Negotiate, Basic creds): no params
				i = n
				for i < len(h) && h[i] == '=' {
					i++
				}
				break
			}
			m := skipSpace(h, n)
			if m >= len(h) || h[m] != '=' {
				i = k // a bare token starts the next challenge (or is a token68)
				break
			}
			m = skipSpace(h, m+1)
			var val string
			if m < len(h) && h[m] == '"' {
				val, m = readQuoted(h, m)
			} else {
				val, m = readBare(h, m)
			}
			key := strings.ToLower(name)
			if _, dup := ch.params[key]; !dup {
				ch.params[key] = val
			}
			i = skipSpace(h, m)
			if i < len(h) && h[i] == ',' {
				i++
				continue
			}
			break
		}
		out = append(out, ch)
	}
}

func isTokenChar(c byte) bool {
	return isAlnum(c) || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

func readToken(h string, i int) (string, int) {
	j := i
	for j < len(h) && isTokenChar(h[j]) {
		j++
	}
	return h[i:j], j
}

// readBare reads an unquoted value; some servers send URLs unquoted, which
// are not RFC tokens, so it stops only at a comma or whitespace.
func readBare(h string, i int) (string, int) {
	j := i
	for j < len(h) && h[j] != ',' && h[j] != ' ' && h[j] != '\t' {
		j++
	}
	return h[i:j], j
}

// readQuoted reads a quoted-string starting at h[i] == '"', undoing
// backslash escapes. An unterminated string runs to the end.
func readQuoted(h string, i int) (string, int) {
	var b strings.Builder
	for j := i + 1; j < len(h); j++ {
		switch c := h[j]; {
		case c == '"':
			return b.String(), j + 1
		case c == '\\' && j+1 < len(h):
			j++
			b.WriteByte(h[j])
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), len(h)
}

func skipSpace(h string, i int) int {
	for i < len(h) && (h[i] == ' ' || h[i] == '\t') {
		i++
	}
	return i
}

func skipSpaceComma(h string, i int) int {
	for i < len(h) && (h[i] == ' ' || h[i] == '\t' || h[i] == ',') {
		i++
	}
	return i
}
