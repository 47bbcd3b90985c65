package swarm

import (
	"crypto/sha256"
	"encoding/binary"

	"github.com/opencontainers/go-digest"
)

// score is a member's rendezvous weight for a blob.
func score(id string, d digest.Digest) uint64 {
	h := sha256.New()
	h.Write([]byte(id))
	h.Write([]byte{0})
	h.Write([]byte(d))
	var sum [sha256.Size]byte
	return binary.BigEndian.Uint64(h.Sum(sum[:0]))
}

// Coordinator is the member with the highest score for d among self and
// members. Every node computes it alone; nodes with the same membership view
// agree, and a member joining or leaving moves only the blobs it wins or
// held (rendezvous hashing), not everyone's.
func Coordinator(self string, members []string, d digest.Digest) string {
	best, bestScore := self, score(self, d)
	for _, m := range members {
		if s := score(m, d); s > bestScore || (s == bestScore && m > best) {
			best, bestScore = m, s
		}
	}
	return best
}
