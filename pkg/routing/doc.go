// Package routing is how Shoal nodes find each other's content: a libp2p host
// (TCP only, optionally a private network) running a Kademlia DHT under the
// private protocol prefix /shoal, where every node announces the content keys
// it holds and looks up which peers hold a key.
//
// Why it is shaped the way it is:
//   - users give HOST:PORT only; the router learns peer IDs itself with a
//     security handshake (learnid.go), so nobody types a peer ID;
//   - provider records live minutes, not the DHT's default of days: a cluster
//     changes quickly and a record for a node that is gone costs a failed fetch;
//   - a look-up miss sits in front of every upstream pull, so it must cost a
//     few milliseconds: look-ups are bounded, deduplicated and cached, and a
//     negative answer is invalidated the moment an announcement for the key
//     reaches this node;
//   - dead peers are forgotten within about a second of their connection
//     dropping, so queries do not wait on them;
//   - a single node with no peers is a normal, quiet state.
package routing
