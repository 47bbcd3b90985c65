package routing

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

const (
	// kadProtocol is the DHT's wire protocol under Shoal's prefix.
	kadProtocol = protocol.ID(protocolPrefix + "/kad/1.0.0")
	// replication is how many nodes store each record: kad-dht's bucket
	// size, the number of closest peers a look-up converges on.
	replication = 20
)

// announce stores this node's records for digests locally and sends them to
// the replication closest peers of each, in one stream per peer.
//
// kad-dht's Provide walks the DHT for every key to find its closest peers,
// which for 10,000 keys is 10,000 walks of several round trips each, every
// reprovide. Shoal's nodes bootstrap to every other node (up to half
// Limits.P2PConns), so a node already knows the whole cluster: the closest
// peers of a key are computed here from that set, by the same XOR metric, and
// each peer gets all of its keys as one batch of ADD_PROVIDER messages, the
// messages kad-dht itself would have sent. A look-up then walks to exactly
// these peers. When bootstrap lists more nodes than it dials, this node
// knows only part of the cluster, and each key goes through the DHT's own
// walk instead (provideWalk).
func (r *Router) announce(ctx context.Context, digests [][32]byte) error {
	if len(digests) == 0 {
		return nil
	}
	mhs := make([]multihash.Multihash, len(digests))
	for i, d := range digests {
		mhs[i] = digestMH(d)
	}
	ps := r.dht.ProviderStore()
	for _, mh := range mhs {
		if err := ps.AddProvider(ctx, mh, peer.AddrInfo{ID: r.self}); err != nil {
			return fmt.Errorf("routing: local provider record: %w", err)
		}
	}
	cands := r.providePeers()
	if len(cands) == 0 {
		return nil // alone: the reprovide on joining spreads them (bootstrap.go)
	}
	if !r.knowsCluster() {
		return r.provideWalk(ctx, mhs)
	}
	plan := assignClosest(mhs, cands, replication)
	self := pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: r.self, Addrs: r.host.Addrs()}})
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		first  error
	)
	sem := make(chan struct{}, parallelism)
	for i, keys := range plan {
		if len(keys) == 0 {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if err := r.sendProviders(ctx, cands[i], mhs, keys, self); err != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = fmt.Errorf("%s: %w", cands[i], err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed > 0 {
		return fmt.Errorf("routing: announcing to %d of %d peers failed, first: %w", failed, len(cands), first)
	}
	return nil
}

// providePeers are the DHT servers this node knows and believes alive: the
// routing table and the connected peers that speak the DHT protocol.
func (r *Router) providePeers() []peer.ID {
	ids := r.dht.RoutingTable().ListPeers()
	for _, p := range r.host.Network().Peers() {
		if ok, _ := r.host.Peerstore().SupportsProtocols(p, kadProtocol); len(ok) > 0 {
			ids = append(ids, p)
		}
	}
	slices.Sort(ids)
	ids = slices.Compact(ids)
	return slices.DeleteFunc(ids, func(p peer.ID) bool { return p == r.self || !r.maybeAlive(p) })
}

// assignClosest returns, for every candidate, the indexes of the keys it is
// among the n closest candidates of (XOR distance of SHA-256 images, as in
// kad-dht).
func assignClosest(mhs []multihash.Multihash, cands []peer.ID, n int) [][]int32 {
	plan := make([][]int32, len(cands))
	if len(cands) <= n {
		all := make([]int32, len(mhs))
		for i := range all {
			all[i] = int32(i)
		}
		for i := range plan {
			plan[i] = all
		}
		return plan
	}
	ids := make([]kb.ID, len(cands))
	for i, p := range cands {
		ids[i] = kb.ConvertPeerID(p)
	}
	type cand struct {
		prefix uint64 // the first 8 bytes of the distance: ties are as good as never
		idx    int32
	}
	dist := make([]cand, len(cands))
	for ki, mh := range mhs {
		k := kb.ConvertKey(string(mh))
		kp := binary.BigEndian.Uint64(k)
		for i, id := range ids {
			dist[i] = cand{kp ^ binary.BigEndian.Uint64(id), int32(i)}
		}
		slices.SortFunc(dist, func(a, b cand) int {
			switch {
			case a.prefix < b.prefix:
				return -1
			case a.prefix > b.prefix:
				return 1
			}
			return int(a.idx - b.idx)
		})
		for _, c := range dist[:n] {
			plan[c.idx] = append(plan[c.idx], int32(ki))
		}
	}
	return plan
}

// sendProviders writes one ADD_PROVIDER message per key to p on one stream,
// then waits for p to close it: p's DHT closes a stream once it has handled
// every message on it, so a clean end means every record is stored.
func (r *Router) sendProviders(ctx context.Context, p peer.ID, mhs []multihash.Multihash, keys []int32, self []*pb.Message_Peer) error {
	ctx, cancel := context.WithTimeout(ctx, provideTimeout)
	defer cancel()
	s, err := r.host.NewStream(ctx, p, kadProtocol)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	w := bufio.NewWriterSize(s, 32<<10)
	msg := &pb.Message{Type: pb.Message_ADD_PROVIDER, ProviderPeers: self}
	var buf []byte
	for _, ki := range keys {
		msg.Key = mhs[ki]
		b, err := proto.MarshalOptions{}.MarshalAppend(buf[:0], msg)
		if err != nil {
			s.Reset()
			return err
		}
		buf = b
		var hdr [binary.MaxVarintLen64]byte
		if _, err := w.Write(hdr[:binary.PutUvarint(hdr[:], uint64(len(b)))]); err != nil {
			s.Reset()
			return err
		}
		if _, err := w.Write(b); err != nil {
			s.Reset()
			return err
		}
	}
	if err := w.Flush(); err != nil {
		s.Reset()
		return err
	}
	if err := s.CloseWrite(); err != nil {
		s.Reset()
		return err
	}
	// ADD_PROVIDER has no reply: the next thing is the end of the stream.
	var one [1]byte
	if _, err := s.Read(one[:]); !errors.Is(err, io.EOF) {
		s.Reset()
		if err == nil {
			err = errors.New("unexpected reply to ADD_PROVIDER")
		}
		return err
	}
	return s.Close()
}

// provideWalk announces each key through the DHT's own Provide, which walks
// to the key's closest peers: for a node that may not know the whole
// cluster.
func (r *Router) provideWalk(ctx context.Context, mhs []multihash.Multihash) error {
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		failed int
		first  error
	)
	sem := make(chan struct{}, parallelism)
	for _, mh := range mhs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, provideTimeout)
			defer cancel()
			err := r.dht.Provide(pctx, cidOfMH(mh), true)
			if err != nil && !errors.Is(err, kb.ErrLookupFailure) {
				mu.Lock()
				failed++
				if first == nil {
					first = err
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if failed > 0 {
		return fmt.Errorf("routing: announcing %d of %d keys failed, first: %w", failed, len(mhs), first)
	}
	return nil
}
