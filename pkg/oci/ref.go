package oci

import (
	// Register the hashes go-digest verifies with; without them sha512 digests
	// would be "unavailable" and Verifier would panic.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// MaxNameLength bounds a repository name, and the registry host plus name, as
// the distribution-spec recommends and as every common client enforces.
const MaxNameLength = 255

// Errors are data: the HTTP layer maps each to a distribution-spec error code.
var (
	ErrNameInvalid   = errors.New("invalid repository name")
	ErrTagInvalid    = errors.New("invalid tag")
	ErrDigestInvalid = errors.New("invalid digest")
	ErrNSInvalid     = errors.New("invalid ns")
	ErrPathInvalid   = errors.New("invalid path")
	ErrUnsupported   = errors.New("unsupported endpoint") // valid shape, but not part of the pull API
)

// ValidateName checks a repository name against the distribution-spec grammar
// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
// without regular expressions, so that hostile input costs linear time.
func ValidateName(name string) error {
	if name == "" || len(name) > MaxNameLength {
		return fmt.Errorf("%w: length %d", ErrNameInvalid, len(name))
	}
	for _, comp := range strings.Split(name, "/") {
		if !validComponent(comp) {
			return fmt.Errorf("%w: component %q", ErrNameInvalid, truncate(comp))
		}
	}
	return nil
}

// validComponent: alphanumeric runs joined by ".", "_", "__" or one or more "-".
func validComponent(c string) bool {
	if c == "" || !isAlnum(c[0]) || !isAlnum(c[len(c)-1]) {
		return false
	}
	for i := 0; i < len(c); {
		if isAlnum(c[i]) {
			i++
			continue
		}
		j := i
		for j < len(c) && !isAlnum(c[j]) {
			j++
		}
		switch sep := c[i:j]; {
		case sep == ".", sep == "_", sep == "__", strings.Trim(sep, "-") == "":
		default:
			return false
		}
		i = j
	}
	return true
}

func isAlnum(b byte) bool { return b >= 'a' && b <= 'z' || b >= '0' && b <= '9' }

// ValidateTag checks [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func ValidateTag(tag string) error {
	if tag == "" || len(tag) > 128 {
		return fmt.Errorf("%w: length %d", ErrTagInvalid, len(tag))
	}
	for i := 0; i < len(tag); i++ {
		b := tag[i]
		ok := b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' ||
			i > 0 && (b == '.' || b == '-')
		if !ok {
			return fmt.Errorf("%w: %q", ErrTagInvalid, truncate(tag))
		}
	}
	return nil
}

// ParseDigest accepts only sha256 and sha512 digests in canonical lower-case hex.
// Other algorithms are refused because we could not verify them.
func ParseDigest(s string) (digest.Digest, error) {
	if !strings.HasPrefix(s, "sha256:") && !strings.HasPrefix(s, "sha512:") {
		return "", fmt.Errorf("%w: %q", ErrDigestInvalid, truncate(s))
	}
	d, err := digest.Parse(s)
	if err != nil {
		return "", fmt.Errorf("%w: %q", ErrDigestInvalid, truncate(s))
	}
	return d, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
