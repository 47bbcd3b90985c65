package inflight

// The trust rule: which bytes of a transfer a reader may have, and when. It
// lives here, and only here.
//
//   - Verified bytes (the whole blob hashed to its digest, at the size the
//     reader was told) may all be read.
//   - Untrusted bytes (from a peer) are held: containerd keeps a partial body
//     and resumes it with a Range request, so a corrupt prefix it has once
//     received could never be repaired by a later source. While any untrusted
//     byte is in the transfer, a reader for the node's own containerd gets
//     nothing until the blob verifies.
//   - Trusted bytes (from the upstream, the reference: if it is wrong, so is
//     everything) stream as they arrive, but the final byte of every reader's
//     body is held until the blob verifies at exactly the size that reader
//     announced, so that no response can end cleanly on unproven bytes. On a
//     mismatch the reader gets an error and the HTTP layer aborts the
//     connection.
//   - A peer's reader (a relay reader: another node following this transfer)
//     gets held bytes as they arrive too, all but the final byte, because
//     that node holds them for its own containerd until it has verified the
//     whole blob itself. This is what lets a herd stream a blob through a
//     tree of nodes while it arrives.

// readable is how far, from offset 0, a reader that announced declared bytes
// (-1: none) may read now. t.mu is held.
func (t *Transfer) readable(declared int64, relay bool) int64 {
	var n int64
	switch {
	case t.done:
		return t.written
	case t.written == 0 || (t.held && !relay):
		return 0
	default:
		n = t.written - 1
	}
	if declared >= 0 && n > declared-1 {
		n = declared - 1
	}
	return n
}
