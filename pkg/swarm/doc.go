// Package swarm lets the nodes of a cluster share a blob while it is still
// arriving, so that a herd of nodes pulling a new image costs the upstream
// about one copy, with no central component.
//
// # One coordinator per blob
//
// Every blob has a coordinator: of the live members that speak the swarm
// protocol (this node included), the one with the highest hash of (peer ID,
// digest) — rendezvous hashing (elect.go). Every node computes it alone, and
// nodes with the same view of the membership agree. A node about to fetch a
// blob that no peer has asks the blob's coordinator for a plan:
//
//   - Fetch: nobody in the swarm is getting this blob; get it (from the
//     upstream), and expect followers. The first node to ask is the fetcher,
//     so a single node pulling a new image streams it straight from the
//     upstream, as it would without a swarm.
//   - Follow P: read the blob from P, a node that is receiving it (the
//     fetcher, or a follower: a relay). The coordinator builds a tree in which
//     no node feeds more than Limits.SwarmFanout others, so one node's uplink
//     never carries the cluster.
//   - Refused: the upstream refused the blob (401, 403 or 404) a moment ago;
//     answer 404 at once, and containerd pulls it with its own credentials.
//
// A follower's bytes come from a peer, so they are held until the whole blob
// verifies (pkg/inflight's trust rule); it relays them to its own followers
// as they arrive, and those verify for themselves.
//
// # Failures
//
// A node tells the coordinator what went wrong with its parent when it asks
// again (the parent died, stalled, lied, or rejected the blob on its own
// verification), and the coordinator re-plans: another parent, or, when the
// fetcher is gone, "fetch" to the asker, which then resumes from the upstream
// at its own offset. When the coordinator cannot be reached in
// Limits.SwarmAsk, a node fetches by itself. Two views of the membership give
// two coordinators and so two fetchers at most; nodes that do not speak the
// protocol (older versions) are not members, and fetch and serve as plain
// peers.
package swarm
