// Package upstream is Shoal's client for the real registries that back the
// mirror: the last step of the resolution chain, after the node's own
// containerd and its peers.
//
// containerd names the registry it wanted with the ns query parameter. That
// value comes from whoever can reach the mirror port, so it is treated as a
// lookup key and never as a raw dial target:
//
//   - an ns listed in Config.Upstreams goes to the operator's URL, whatever
//     address that is (http or https by its scheme). Its redirects and bearer
//     realms are the upstream's choice, not the operator's: they are dialled
//     directly only on a listed host, and otherwise pass the guard below
//     (listed.go). Cloud metadata endpoints are never dialled, listed or not;
//   - with Config.Strict, any other ns is refused;
//   - otherwise the ns is contacted as https://<ns>, but only if every address
//     it stands for is public (see IsPublic). The check is repeated on the
//     address actually dialled, so DNS rebinding, redirects and token realms
//     cannot reach loopback, link-local (cloud metadata) or private networks.
//
// The built-in docker.io default (https://registry-1.docker.io) counts as
// listed for Strict, but is dialled through the guard because no operator
// chose it; listing docker.io explicitly removes the guard.
//
// Client.Trusted tells the mirror whether an upstream's bytes may stream to
// containerd before they verify: https, or plain HTTP over loopback.
//
// Only anonymous pulls are attempted. An upstream that wants credentials
// (401/403) is reported as ErrNotFound so that containerd falls back to its
// own authenticated pull.
package upstream
