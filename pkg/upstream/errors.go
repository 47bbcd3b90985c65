package upstream

import (
	"errors"
	"fmt"
)

// Every error returned by this package wraps exactly one of these, so the
// mirror can map it to a response with errors.Is, and carries a reason for
// logs.
var (
	// ErrNotFound: the upstream does not have it (404), or will only give it
	// to authenticated clients (401/403), which containerd must do itself.
	ErrNotFound = errors.New("upstream: not found")
	// ErrRefused: the policy forbids contacting this upstream (unlisted ns in
	// strict mode, non-public address, malformed ns or request).
	ErrRefused = errors.New("upstream: refused by policy")
	// ErrUnavailable: network errors, timeouts, 5xx, 429, unexpected answers,
	// and content that does not match its digest.
	ErrUnavailable = errors.New("upstream: unavailable")
)

// wrapf returns an error that wraps kind (and any %w operand in a) with a
// formatted reason.
func wrapf(kind error, format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{kind}, a...)...)
}

func notFoundf(format string, a ...any) error    { return wrapf(ErrNotFound, format, a...) }
func refusedf(format string, a ...any) error     { return wrapf(ErrRefused, format, a...) }
func unavailablef(format string, a ...any) error { return wrapf(ErrUnavailable, format, a...) }

// clip shortens caller-supplied text (ns values come from the network) before
// it goes into an error message.
func clip(s string) string {
	const limit = 100
	if len(s) > limit {
		return s[:limit] + "..."
	}
	return s
}
