// Package peer is the client side of fetching from other nodes: which
// providers to ask and in what order (hedging), guards on what they send
// (stall and throughput), demotion of those that misbehave, and the swarm
// source that follows a node still receiving a blob.
//
// Everything a peer sends is untrusted: blob bytes go through pkg/inflight,
// which holds them until the whole blob verifies (its trust rule), and
// manifests are checked against their digest here before anything else
// sees them.
//
// Demotion has one owner, blame (demote.go): every fault a peer commits —
// unreachable, stalled, trickling, a short body, a lied size, bytes that fail
// verification — goes through it, and it alone decides for how long the peer
// is kept out of look-ups.
package peer
