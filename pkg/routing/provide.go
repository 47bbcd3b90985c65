package routing

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"sync"
	"time"

	pb "github.com/libp2p/go-libp2p-kad-dht/pb"
	kb "github.com/libp2p/go-libp2p-kbucket"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	ma "github.com/multiformats/go-multiaddr"
	"github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"
)

const (
	// kadProtocol is the DHT's wire protocol under Shoal's prefix.
	kadProtocol = protocol.ID(protocolPrefix + "/kad/1.0.0")
	// batchProtocol carries provider batches: the same records as kad-dht's
	// ADD_PROVIDER messages, 32 bytes a key instead of a protobuf message
	// each, stored without the DHT's provider manager (writeBatch).
	batchProtocol = protocol.ID(protocolPrefix + "/providers/1.0.0")
	// replication is how many nodes store each record: kad-dht's bucket
	// size, the number of closest peers a look-up converges on.
	replication = 20
	// batchChunk is the most digests in one chunk of a batch (128 KiB),
	// batchMaxAddrs and batchMaxAddrLen bound the addresses it names.
	batchChunk      = 4096
	batchMaxAddrs   = 8
	batchMaxAddrLen = 256
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
	_, err := r.announceTo(ctx, digests, nil)
	return err
}

// announceTo announces digests as announce does, but sends only to the
// candidates only admits (nil: all). It returns the candidates it planned
// with.
func (r *Router) announceTo(ctx context.Context, digests [][32]byte, only func(peer.ID) bool) ([]peer.ID, error) {
	if len(digests) == 0 {
		return nil, nil
	}
	if only == nil {
		r.provs.addMany(r.self, digests)
	}
	mhs := make([]multihash.Multihash, len(digests))
	for i, d := range digests {
		mhs[i] = digestMH(d)
	}
	cands := r.providePeers()
	if len(cands) == 0 {
		return nil, nil // alone: the reprovide on joining spreads them (bootstrap.go)
	}
	if !r.knowsCluster() {
		if only != nil {
			return cands, nil // the walk finds the new peers by itself
		}
		return cands, r.provideWalk(ctx, mhs)
	}
	plan := assignClosest(mhs, cands, replication)
	self := pb.RawPeerInfosToPBPeers([]peer.AddrInfo{{ID: r.self, Addrs: r.host.Addrs()}})
	failed, first, err := fanOut(ctx, len(plan), func(i int) error {
		if len(plan[i]) == 0 || only != nil && !only(cands[i]) {
			return nil
		}
		if err := r.sendProviders(ctx, cands[i], digests, mhs, plan[i], self); err != nil {
			return fmt.Errorf("%s: %w", cands[i], err)
		}
		return nil
	})
	if err != nil {
		return cands, err
	}
	if failed > 0 {
		return cands, fmt.Errorf("routing: announcing to %d of %d peers failed, first: %w", failed, len(cands), first)
	}
	return cands, nil
}

// reprovide announces every advertised key to every candidate, and
// remembers the candidates as told.
func (r *Router) reprovide(ctx context.Context) (int, error) {
	keys := r.advertisedKeys()
	cands, err := r.announceTo(ctx, keys, nil)
	r.annMu.Lock()
	clear(r.told)
	for _, p := range cands {
		r.told[p] = struct{}{}
	}
	r.annMu.Unlock()
	return len(keys), err
}

// announceNew sends peers that joined since the last reprovide the records
// they are now among the closest for. Without it, a node that joined the
// cluster before most of it had connected (or a node that came up later)
// would be missing from the records of up to ReprovideInterval, and a key's
// records would sit on the peers that were closest in a smaller cluster.
// Each newcomer gets only its share, about replication/N of the keys, so a
// node joining costs the others little.
func (r *Router) announceNew(ctx context.Context) error {
	r.annMu.Lock()
	told := maps.Clone(r.told)
	r.annMu.Unlock()
	isNew := func(p peer.ID) bool { _, ok := told[p]; return !ok }
	if !slices.ContainsFunc(r.providePeers(), isNew) {
		return nil
	}
	cands, err := r.announceTo(ctx, r.advertisedKeys(), isNew)
	r.annMu.Lock()
	for _, p := range cands {
		r.told[p] = struct{}{}
	}
	r.annMu.Unlock()
	return err
}

// forgetTold drops a peer that disconnected: if it comes back it gets its
// records again.
func (r *Router) forgetTold(p peer.ID) {
	r.annMu.Lock()
	delete(r.told, p)
	r.annMu.Unlock()
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

// sendProviders sends p the records of keys on one stream: as one provider
// batch (batchProtocol) where p speaks it, or else as one ADD_PROVIDER
// message per key, what kad-dht itself would send. Either way it then waits
// for p to close the stream, which p does once it has stored every record.
func (r *Router) sendProviders(ctx context.Context, p peer.ID, digests [][32]byte, mhs []multihash.Multihash, keys []int32, self []*pb.Message_Peer) error {
	used, err := r.sendProvidersOn(ctx, p, digests, mhs, keys, self, batchProtocol, kadProtocol)
	if err != nil && used == batchProtocol && ctx.Err() == nil {
		// libp2p negotiates lazily from what the peerstore says p speaks,
		// which lags behind a peer restarted on another version.
		_, err = r.sendProvidersOn(ctx, p, digests, mhs, keys, self, kadProtocol)
	}
	return err
}

func (r *Router) sendProvidersOn(ctx context.Context, p peer.ID, digests [][32]byte, mhs []multihash.Multihash, keys []int32, self []*pb.Message_Peer, protos ...protocol.ID) (protocol.ID, error) {
	ctx, cancel := context.WithTimeout(ctx, provideTimeout)
	defer cancel()
	s, err := r.host.NewStream(ctx, p, protos...)
	if err != nil {
		return "", err
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = s.SetDeadline(dl)
	}
	w := bufio.NewWriterSize(s, 32<<10)
	if s.Protocol() == batchProtocol {
		err = writeBatch(w, r.host.Addrs(), digests, keys)
	} else {
		err = writeAddProviders(w, mhs, keys, self)
	}
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = s.CloseWrite()
	}
	if err != nil {
		s.Reset()
		return s.Protocol(), err
	}
	// Neither protocol replies: the next thing is the end of the stream.
	var one [1]byte
	if _, err := s.Read(one[:]); !errors.Is(err, io.EOF) {
		s.Reset()
		if err == nil {
			err = errors.New("unexpected reply to a provider batch")
		}
		return s.Protocol(), err
	}
	return s.Protocol(), s.Close()
}

func writeUvarint(w *bufio.Writer, n uint64) error {
	var b [binary.MaxVarintLen64]byte
	_, err := w.Write(b[:binary.PutUvarint(b[:], n)])
	return err
}

// writeBatch writes a provider batch: the provider's addresses, then keys
// in chunks of at most batchChunk digests, each chunk its count followed by
// the raw 32-byte digests. The provider is the stream's remote peer, which
// the connection authenticated, so the batch does not name it.
func writeBatch(w *bufio.Writer, addrs []ma.Multiaddr, digests [][32]byte, keys []int32) error {
	addrs = addrs[:min(len(addrs), batchMaxAddrs)]
	if err := writeUvarint(w, uint64(len(addrs))); err != nil {
		return err
	}
	for _, a := range addrs {
		if err := writeUvarint(w, uint64(len(a.Bytes()))); err != nil {
			return err
		}
		if _, err := w.Write(a.Bytes()); err != nil {
			return err
		}
	}
	for len(keys) > 0 {
		n := min(len(keys), batchChunk)
		if err := writeUvarint(w, uint64(n)); err != nil {
			return err
		}
		for _, ki := range keys[:n] {
			if _, err := w.Write(digests[ki][:]); err != nil {
				return err
			}
		}
		keys = keys[n:]
	}
	return nil
}

// writeAddProviders writes one varint-delimited ADD_PROVIDER message per key.
func writeAddProviders(w *bufio.Writer, mhs []multihash.Multihash, keys []int32, self []*pb.Message_Peer) error {
	msg := &pb.Message{Type: pb.Message_ADD_PROVIDER, ProviderPeers: self}
	var buf []byte
	for _, ki := range keys {
		msg.Key = mhs[ki]
		b, err := proto.MarshalOptions{}.MarshalAppend(buf[:0], msg)
		if err != nil {
			return err
		}
		buf = b
		if err := writeUvarint(w, uint64(len(b))); err != nil {
			return err
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// handleBatch stores a provider batch from the stream's remote peer. Every
// record goes through provStore's caps; a malformed batch resets the stream,
// keeping what was stored before the fault.
func (r *Router) handleBatch(s network.Stream) {
	p := s.Conn().RemotePeer()
	_ = s.SetDeadline(time.Now().Add(provideTimeout))
	br := bufio.NewReaderSize(s, 32<<10)
	err := readBatch(br, func(addrs []ma.Multiaddr) {
		// Where look-ups will tell others to find p, as the DHT does for
		// an ADD_PROVIDER (records.ProviderAddrTTL).
		r.host.Peerstore().AddAddrs(p, addrs, r.cfg.ProviderTTL)
	}, func(chunk [][32]byte) {
		r.provs.addMany(p, chunk)
		r.cache.stored(chunk)
	})
	if err != nil {
		r.log.Debug("p2p: provider batch", "peer", p, "err", err)
		s.Reset()
		return
	}
	s.Close()
}

// readBatch parses a provider batch (writeBatch), handing its addresses
// and then each chunk of digests to the callbacks as they arrive. The chunk
// slice is reused.
func readBatch(br *bufio.Reader, onAddrs func([]ma.Multiaddr), onChunk func([][32]byte)) error {
	na, err := binary.ReadUvarint(br)
	if err != nil || na > batchMaxAddrs {
		return fmt.Errorf("bad address count %d: %v", na, err)
	}
	addrs := make([]ma.Multiaddr, 0, na)
	for range na {
		n, err := binary.ReadUvarint(br)
		if err != nil || n > batchMaxAddrLen {
			return fmt.Errorf("bad address length %d: %v", n, err)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(br, b); err != nil {
			return err
		}
		a, err := ma.NewMultiaddrBytes(b)
		if err != nil {
			return err
		}
		addrs = append(addrs, a)
	}
	if len(addrs) > 0 {
		onAddrs(addrs)
	}
	chunk := make([][32]byte, 0, batchChunk)
	for {
		n, err := binary.ReadUvarint(br)
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil || n == 0 || n > batchChunk {
			return fmt.Errorf("bad chunk length %d: %v", n, err)
		}
		chunk = chunk[:n]
		for i := range chunk {
			if _, err := io.ReadFull(br, chunk[i][:]); err != nil {
				return err
			}
		}
		onChunk(chunk)
	}
}

// provideWalk announces each key through the DHT's own Provide, which walks
// to the key's closest peers: for a node that may not know the whole
// cluster.
func (r *Router) provideWalk(ctx context.Context, mhs []multihash.Multihash) error {
	failed, first, err := fanOut(ctx, len(mhs), func(i int) error {
		pctx, cancel := context.WithTimeout(ctx, provideTimeout)
		defer cancel()
		if err := r.dht.Provide(pctx, cidOfMH(mhs[i]), true); err != nil && !errors.Is(err, kb.ErrLookupFailure) {
			return err
		}
		return nil
	})
	if err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("routing: announcing %d of %d keys failed, first: %w", failed, len(mhs), first)
	}
	return nil
}

// fanOut runs fn for 0..n-1, parallelism at a time, and counts the calls
// that failed. err is ctx's, when it ended before every call started.
func fanOut(ctx context.Context, n int, fn func(i int) error) (failed int, first, err error) {
	var (
		wg sync.WaitGroup
		mu sync.Mutex
	)
	sem := make(chan struct{}, parallelism)
	for i := range n {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return failed, first, ctx.Err()
		}
		wg.Go(func() {
			defer func() { <-sem }()
			if e := fn(i); e != nil {
				mu.Lock()
				failed++
				if first == nil {
					first = e
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failed, first, nil
}
