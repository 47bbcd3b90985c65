package routing

import (
	"crypto/sha256"

	"github.com/ipfs/go-cid"
	"github.com/multiformats/go-multihash"
)

// keyCID maps a content key ("sha256:<hex>" or "ns/name:tag") to the CID the
// DHT stores it under: CID v1, raw codec, sha2-256 of the key string. Hashing
// the key string (not the digest it may name) keeps digests and tags in one
// flat space and gives every key the same fixed size on the wire.
func keyCID(key string) cid.Cid { return cidOfMH(digestMH(keyDigest(key))) }

// keyDigest is the sha2-256 of the key string: the digest inside its
// multihash, and how the router and the provider store hold a key (32 bytes,
// not the string).
func keyDigest(key string) [32]byte { return sha256.Sum256([]byte(key)) }

// digestMH is the sha2-256 multihash of a digest.
func digestMH(d [32]byte) multihash.Multihash {
	mh := make([]byte, 34)
	mh[0], mh[1] = multihash.SHA2_256, 32
	copy(mh[2:], d[:])
	return mh
}

func cidOfMH(mh multihash.Multihash) cid.Cid { return cid.NewCidV1(cid.Raw, mh) }
