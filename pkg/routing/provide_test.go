package routing

import (
	"fmt"
	"slices"
	"testing"

	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multihash"
)

// TestAssignClosest: each key goes to exactly the peers kad-dht itself
// would call its closest, so a look-up's walk ends at them.
func TestAssignClosest(t *testing.T) {
	for _, n := range []int{1, 5, 20, 21, 64} {
		t.Run(fmt.Sprint(n, " peers"), func(t *testing.T) {
			cands := testPeers(t, n)
			mhs := make([]multihash.Multihash, 300)
			for i := range mhs {
				mhs[i] = digestMH(keyDigest(fmt.Sprintf("sha256:%d", i)))
			}
			plan := assignClosest(mhs, cands, replication)
			got := make([][]peer.ID, len(mhs))
			for pi, keys := range plan {
				for _, k := range keys {
					got[k] = append(got[k], cands[pi])
				}
			}
			for i, mh := range mhs {
				want := kb.SortClosestPeers(cands, kb.ConvertKey(string(mh)))
				want = want[:min(len(want), replication)]
				slices.Sort(want)
				slices.Sort(got[i])
				if !slices.Equal(got[i], want) {
					t.Fatalf("key %d: assigned to %v, kad-dht's closest are %v", i, got[i], want)
				}
			}
		})
	}
}
