package oci

import (
	"errors"
	"fmt"
	"maps"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// ErrQueryInvalid: a tag list or referrers query that Shoal will not forward.
var ErrQueryInvalid = errors.New("invalid query")

// Bounds on what a listing query may carry. Registries paginate with n and
// last, some with a parameter of their own (an opaque cursor), so parameters
// other than ns are forwarded; these bounds keep that small and printable.
const (
	maxQueryParams   = 16
	maxQueryKeyLen   = 64
	maxQueryValueLen = 1024
	maxPageSize      = 9_999_999 // n; registries cap far lower
)

// ListQuery is the query of a GET /v2/<name>/tags/list or
// /v2/<name>/referrers/<digest>, ns excepted (the HTTP layer reads ns for
// every endpoint).
type ListQuery struct {
	N            int    // page size from n; -1 when absent
	Last         string // last, "" when absent
	ArtifactType string // referrers: the artifactType filter, "" when absent
	// Params is every parameter but ns, as it goes to the upstream, so that
	// pagination a registry defines for itself survives the mirror.
	Params url.Values
}

// ParseListQuery parses raw (url.URL.RawQuery) for a tag list (KindTags) or
// a referrers request (KindReferrers). It is strict: malformed escapes, ";"
// separators, a parameter given twice, names outside [A-Za-z0-9_.-], control
// characters, n that is not a canonical decimal and an artifactType that is
// not a media type are refused, so what is forwarded is what was checked.
func ParseListQuery(kind Kind, raw string) (ListQuery, error) {
	q := ListQuery{N: -1, Params: url.Values{}}
	if kind != KindTags && kind != KindReferrers {
		return q, fmt.Errorf("%w: %s has no list query", ErrQueryInvalid, kind)
	}
	vals, err := url.ParseQuery(raw)
	if err != nil {
		return q, fmt.Errorf("%w: %v", ErrQueryInvalid, truncate(err.Error()))
	}
	if len(vals) > maxQueryParams {
		return q, fmt.Errorf("%w: more than %d parameters", ErrQueryInvalid, maxQueryParams)
	}
	for _, k := range slices.Sorted(maps.Keys(vals)) {
		vs := vals[k]
		if !validQueryKey(k) {
			return q, fmt.Errorf("%w: parameter name %q", ErrQueryInvalid, truncate(k))
		}
		if len(vs) != 1 {
			return q, fmt.Errorf("%w: %s given %d times", ErrQueryInvalid, k, len(vs))
		}
		v := vs[0]
		if !validQueryValue(v) {
			return q, fmt.Errorf("%w: value of %s", ErrQueryInvalid, k)
		}
		switch {
		case k == "ns":
			continue // the HTTP layer's
		case k == "n":
			n, err := parsePageSize(v)
			if err != nil {
				return q, err
			}
			q.N = n
		case k == "last":
			q.Last = v
		case k == "artifactType" && kind == KindReferrers:
			if err := ValidateMediaType(v); err != nil {
				return q, fmt.Errorf("%w: artifactType: %w", ErrQueryInvalid, err)
			}
			q.ArtifactType = v
		}
		q.Params[k] = []string{v}
	}
	return q, nil
}

func parsePageSize(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > maxPageSize || v != strconv.Itoa(n) {
		return 0, fmt.Errorf("%w: n must be a decimal from 0 to %d, got %q", ErrQueryInvalid, maxPageSize, truncate(v))
	}
	return n, nil
}

func validQueryKey(k string) bool {
	if k == "" || len(k) > maxQueryKeyLen {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return false
		}
	}
	return true
}

func validQueryValue(v string) bool {
	if len(v) > maxQueryValueLen || !utf8.ValidString(v) {
		return false
	}
	return !strings.ContainsFunc(v, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// ValidateMediaType checks type "/" subtype as RFC 6838 names them (no
// parameters): each 1-127 characters of letters, digits and !#$&-^_.+,
// starting with a letter or digit.
func ValidateMediaType(mt string) error {
	typ, sub, ok := strings.Cut(mt, "/")
	if !ok || !restrictedName(typ) || !restrictedName(sub) {
		return fmt.Errorf("%q is not a media type", truncate(mt))
	}
	return nil
}

func restrictedName(s string) bool {
	if s == "" || len(s) > 127 || !isAlnumAnyCase(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnumAnyCase(c) && !strings.ContainsRune("!#$&-^_.+", rune(c)) {
			return false
		}
	}
	return true
}

func isAlnumAnyCase(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}
