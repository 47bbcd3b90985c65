// Package bootstrap supplies the p2p addresses ("HOST:PORT") of other Shoal
// nodes for the router to connect to: a static list, a DNS name (a headless
// Service), or the Kubernetes EndpointSlices of the chart's Service. Each
// source is a Func that the router polls; none of them deals in peer IDs,
// which the router learns by itself.
package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Func returns the current p2p addresses of other nodes.
type Func = func(ctx context.Context) ([]string, error)

// Static returns addrs, each of which must be "HOST:PORT". An invalid entry
// makes every call fail with the same error, so a typo in a flag is reported
// instead of silently ignored.
func Static(addrs []string) Func {
	var bad error
	out := make([]string, 0, len(addrs))
	for _, a := range addrs {
		if err := ValidateHostPort(a); err != nil {
			bad = errors.Join(bad, err)
			continue
		}
		out = append(out, a)
	}
	return func(context.Context) ([]string, error) {
		if bad != nil {
			return slices.Clone(out), bad
		}
		return slices.Clone(out), nil
	}
}

// ValidateHostPort checks that s is "HOST:PORT" with a non-empty host and a
// port in 1..65535.
func ValidateHostPort(s string) error {
	h, p, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("bootstrap address %q: %w", s, err)
	}
	if h == "" {
		return fmt.Errorf("bootstrap address %q: missing host", s)
	}
	if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
		return fmt.Errorf("bootstrap address %q: bad port", s)
	}
	return nil
}

// DNS resolves name on every call (a headless Service answers with every
// ready pod, and the answer changes as pods come and go) and joins each
// address with port. A nil lookup uses net.DefaultResolver.LookupHost.
func DNS(name, port string, lookup func(ctx context.Context, host string) ([]string, error)) Func {
	if lookup == nil {
		lookup = net.DefaultResolver.LookupHost
	}
	return func(ctx context.Context) ([]string, error) {
		ips, err := lookup(ctx, name)
		if err != nil {
			return nil, fmt.Errorf("bootstrap dns %s: %w", name, err)
		}
		out := make([]string, 0, len(ips))
		for _, ip := range ips {
			out = append(out, net.JoinHostPort(ip, port))
		}
		slices.Sort(out)
		return slices.Compact(out), nil
	}
}

// Combine returns the union of every source's addresses. It fails only when
// every source fails; a partial failure still yields what the others found.
// The sources are asked at once, each for at most timeout (no bound when
// zero; a source must honour its context): one that hangs, such as a DNS
// lookup with the cluster DNS down (the resolver retries for 10 s), must not
// hold up the others, or a node restarted in a rolling upgrade stays alone,
// and its peers keep it demoted, for as long.
func Combine(timeout time.Duration, fns ...Func) Func {
	return func(ctx context.Context) ([]string, error) {
		answers := make([][]string, len(fns))
		errs := make([]error, len(fns))
		var wg sync.WaitGroup
		for i, fn := range fns {
			if fn == nil {
				continue
			}
			wg.Go(func() {
				sctx, cancel := ctx, context.CancelFunc(func() {})
				if timeout > 0 {
					sctx, cancel = context.WithTimeout(ctx, timeout)
				}
				defer cancel()
				answers[i], errs[i] = fn(sctx)
			})
		}
		wg.Wait()
		out := slices.Concat(answers...)
		slices.Sort(out)
		out = slices.Compact(out)
		failed := slices.DeleteFunc(slices.Clone(errs), func(err error) bool { return err == nil })
		if len(failed) > 0 && len(failed) == countNonNil(fns) {
			return out, errors.Join(failed...)
		}
		return out, nil
	}
}

func countNonNil(fns []Func) int {
	n := 0
	for _, fn := range fns {
		if fn != nil {
			n++
		}
	}
	return n
}
