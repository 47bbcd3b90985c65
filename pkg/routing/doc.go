// Package routing is how Shoal nodes find each other's content: a libp2p host
// (TCP only, optionally a private network) running a Kademlia DHT under the
// private protocol prefix /shoal, where every node announces the content keys
// it holds and looks up which peers hold a key.
//
// Why it is shaped the way it is:
//   - users give HOST:PORT only; the router learns peer IDs itself with a
//     security handshake (learnid.go), so nobody types a peer ID;
//   - provider records live 30 minutes and are re-announced every 10, not the
//     DHT's default of days: a cluster changes quickly and a record for a node
//     that is gone costs a failed fetch; a new key is announced at once;
//   - announcing is batched (provide.go): a node knows the whole cluster
//     (bootstrap connects to every node, up to half of Limits.P2PConns), so it
//     computes each key's 20 closest peers itself, by kad-dht's metric, and
//     sends each peer all of its keys in one stream, 32 bytes a key, instead
//     of one DHT walk per key;
//   - every node stores records for the cluster, about 230,000 at 100 nodes
//     with 10,000 keys each: the store (provstore.go) keeps a record in 8
//     bytes plus its share of the key, and expires records by a timing wheel,
//     never by scanning them all;
//   - the libp2p host carries only DHT and control messages (blobs go over
//     the peer API), so its stream windows, resource limits and connection
//     counts are small and fixed (host.go);
//   - a look-up miss sits in front of every upstream pull, so it must cost a
//     few milliseconds: look-ups are bounded, deduplicated and cached, and a
//     negative answer is invalidated the moment an announcement for the key
//     reaches this node;
//   - dead peers are forgotten within about a second of their connection
//     dropping, so queries do not wait on them;
//   - a single node with no peers is a normal, quiet state.
package routing
