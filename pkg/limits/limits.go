// Package limits holds every timeout, cap and penalty of the pull path in one
// struct, so that an operator (and a reader) finds them in one place. The
// daemon builds one Limits from Default and its flags and hands the relevant
// fields to each component; components fall back to Default for zero fields.
package limits

import "time"

// Limits are the numbers behind the resolution chain, transfers, the peer
// client and the swarm. Zero fields mean "the default".
type Limits struct {
	// Transfers (pkg/inflight).

	// MaxBlobSize refuses larger blobs: a hostile source could stream forever.
	MaxBlobSize int64
	// Linger keeps a finished transfer nobody reads, servable to peers until
	// containerd has committed the blob; AbandonGrace keeps an unfinished
	// one whose readers all left, in case its client comes back with a Range
	// request.
	Linger       time.Duration
	AbandonGrace time.Duration
	// UpstreamStall abandons an upstream body that sends nothing this long; the
	// next attempt resumes at the same offset.
	UpstreamStall time.Duration
	// ChunkSize and WindowChunks size each transfer's memory window: one
	// reader streams through it without touching the disk.
	ChunkSize    int
	WindowChunks int
	// SourceAttempts bounds how often one source is re-opened after failing
	// mid-stream.
	SourceAttempts int
	// MaxTransfers bounds the transfers in flight, and MaxSpool the bytes
	// their spool files may take together (--max-transfers, --max-spool):
	// past either, a new transfer is a fast 404 and containerd pulls
	// directly. MaxSpool has no fixed default: the daemon derives it from
	// the data directory's free space; zero here means 10 GiB.
	MaxTransfers int
	MaxSpool     int64

	// Peer fetches (pkg/peer).

	// PeerDial bounds a TCP connect to a peer.
	PeerDial time.Duration
	// PeerHeaders bounds the wait for a peer's response headers.
	PeerHeaders time.Duration
	// HedgeDelay asks a second provider when the first has not answered.
	HedgeDelay time.Duration
	// PeerStall abandons a peer body that sends nothing this long.
	PeerStall time.Duration
	// PeerMinRate abandons a peer body slower than this many bytes per second,
	// averaged over PeerRateWindow: a peer that trickles one byte every few
	// seconds must not hold a pull for minutes.
	PeerMinRate    int64
	PeerRateWindow time.Duration

	// Demotion (pkg/peer): how long a peer is kept out of look-ups, by fault.

	LiarPenalty time.Duration // sent bytes that failed verification, or lied about a size
	DeadPenalty time.Duration // could not be reached
	SlowPenalty time.Duration // stalled, trickled, or ended a body early

	// The swarm (pkg/swarm): nodes sharing a blob while it arrives.

	// SwarmFanout is how many followers one node feeds directly; further
	// followers read from followers (a relay tree).
	SwarmFanout int
	// SwarmRelayReaders caps the peers reading one transfer in flight from a
	// node, whatever the coordinator said: the node's uplink is its own.
	SwarmRelayReaders int
	// SwarmAsk bounds a question to a blob's coordinator; past it, the node
	// fetches by itself.
	SwarmAsk time.Duration
	// SwarmMemory is how long a coordinator remembers a blob's swarm, and
	// SwarmBlobs how many blobs it remembers.
	SwarmMemory time.Duration
	SwarmBlobs  int
	// SwarmRefused is how long a coordinator answers "the upstream refused"
	// (401/403/404) for a blob without asking again.
	SwarmRefused time.Duration
	// SwarmAnnounce bounds announcing (and withdrawing) a transfer in flight
	// in the DHT; it runs beside the transfer, which never waits for it.
	SwarmAnnounce time.Duration

	// The DHT (pkg/routing).

	// ProviderRecords caps the provider records one node stores for the
	// cluster, and ProviderRecordsPerPeer those from any one member. At
	// about 10 to 30 bytes a record the cap bounds that store at tens of MiB;
	// a 100-node cluster whose nodes each hold the same 10,000 keys puts
	// about 220,000 on each node.
	ProviderRecords        int
	ProviderRecordsPerPeer int
	// P2PConns is the number of libp2p connections the node keeps (the
	// connection manager's low water mark; trimming starts at P2PConns*5/4),
	// and how many peers bootstrap connects to: the two must agree, or
	// bootstrap and trimming fight. A cluster larger than this is still
	// one DHT; each node just knows part of it.
	P2PConns int
	// BootstrapSource bounds one answer of a bootstrap source (a DNS lookup
	// of the headless Service, the EndpointSlice cache); they are asked at
	// once, and one past it adds nothing to that round.
	BootstrapSource time.Duration

	// Manifests.

	// MaxManifestSize bounds manifests read into memory (distribution-spec's 4 MiB).
	MaxManifestSize int64
}

// Default returns the limits a node runs with unless told otherwise.
func Default() Limits {
	return Limits{
		MaxBlobSize:    64 << 30,
		Linger:         30 * time.Second,
		AbandonGrace:   2 * time.Second,
		UpstreamStall:  30 * time.Second,
		ChunkSize:      256 << 10,
		WindowChunks:   8,
		SourceAttempts: 3,
		MaxTransfers:   32,
		MaxSpool:       10 << 30,

		PeerDial:       300 * time.Millisecond,
		PeerHeaders:    2 * time.Second,
		HedgeDelay:     100 * time.Millisecond,
		PeerStall:      5 * time.Second,
		PeerMinRate:    1 << 20,
		PeerRateWindow: 5 * time.Second,

		LiarPenalty: 10 * time.Minute,
		DeadPenalty: 30 * time.Second,
		SlowPenalty: time.Minute,

		SwarmFanout:       3,
		SwarmRelayReaders: 6,
		SwarmAsk:          300 * time.Millisecond,
		SwarmMemory:       10 * time.Minute,
		SwarmBlobs:        4096,
		SwarmRefused:      30 * time.Second,
		SwarmAnnounce:     10 * time.Second,

		ProviderRecords:        2_000_000,
		ProviderRecordsPerPeer: 200_000,
		P2PConns:               400,
		BootstrapSource:        2 * time.Second,

		MaxManifestSize: 4 << 20,
	}
}

// WithDefaults fills every zero field of l from Default.
func (l Limits) WithDefaults() Limits {
	d := Default()
	fill := func(v *time.Duration, def time.Duration) {
		if *v <= 0 {
			*v = def
		}
	}
	fillInt := func(v *int, def int) {
		if *v <= 0 {
			*v = def
		}
	}
	fill64 := func(v *int64, def int64) {
		if *v <= 0 {
			*v = def
		}
	}
	fill64(&l.MaxBlobSize, d.MaxBlobSize)
	fill(&l.Linger, d.Linger)
	fill(&l.AbandonGrace, d.AbandonGrace)
	fill(&l.UpstreamStall, d.UpstreamStall)
	fillInt(&l.ChunkSize, d.ChunkSize)
	fillInt(&l.WindowChunks, d.WindowChunks)
	fillInt(&l.SourceAttempts, d.SourceAttempts)
	fillInt(&l.MaxTransfers, d.MaxTransfers)
	fill64(&l.MaxSpool, d.MaxSpool)
	fill(&l.PeerDial, d.PeerDial)
	fill(&l.PeerHeaders, d.PeerHeaders)
	fill(&l.HedgeDelay, d.HedgeDelay)
	fill(&l.PeerStall, d.PeerStall)
	fill64(&l.PeerMinRate, d.PeerMinRate)
	fill(&l.PeerRateWindow, d.PeerRateWindow)
	fill(&l.LiarPenalty, d.LiarPenalty)
	fill(&l.DeadPenalty, d.DeadPenalty)
	fill(&l.SlowPenalty, d.SlowPenalty)
	fillInt(&l.SwarmFanout, d.SwarmFanout)
	fillInt(&l.SwarmRelayReaders, d.SwarmRelayReaders)
	fill(&l.SwarmAsk, d.SwarmAsk)
	fill(&l.SwarmMemory, d.SwarmMemory)
	fillInt(&l.SwarmBlobs, d.SwarmBlobs)
	fill(&l.SwarmRefused, d.SwarmRefused)
	fill(&l.SwarmAnnounce, d.SwarmAnnounce)
	fillInt(&l.ProviderRecords, d.ProviderRecords)
	fillInt(&l.ProviderRecordsPerPeer, d.ProviderRecordsPerPeer)
	fillInt(&l.P2PConns, d.P2PConns)
	fill(&l.BootstrapSource, d.BootstrapSource)
	fill64(&l.MaxManifestSize, d.MaxManifestSize)
	return l
}
