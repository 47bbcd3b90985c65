package routing

import (
	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// keyCID maps a content key ("sha256:<hex>" or "ns/name:tag") to the CID the
// DHT stores it under: CID v1, raw codec, sha2-256 of the key string. Hashing
// the key string (not the digest it may name) keeps digests and tags in one
// flat space and gives every key the same fixed size on the wire.
func keyCID(key string) cid.Cid {
	mh, err := multihash.Sum([]byte(key), multihash.SHA2_256, -1)
	if err != nil {
		// sha2-256 is always registered; this cannot happen.
		panic(err)
	}
	return cid.NewCidV1(cid.Raw, mh)
}
