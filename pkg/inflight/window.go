package inflight

// The window: the most recent bytes of a transfer, in memory.
//
// A transfer with one reader (the common case: the node's own containerd
// pulling a layer nobody else wants) streams through memory only: the filler
// reads into a chunk, hashes it, and the reader writes that same chunk to its
// socket. Nothing touches the disk, and the reader receives bytes at the rate
// they arrive. The window is small and fixed (Config.WindowChunks), so a
// reader slower than its source simply slows the source down, as a plain
// proxy would.
//
// Bytes that leave the window are gone unless the transfer spools (spool.go).

// chunk is a contiguous piece of the blob in memory.
type chunk struct {
	off     int64
	buf     []byte // the bytes filled so far; cap(buf) is the chunk size
	pins    int    // readers and the spool writer using buf outside the lock
	dropped bool   // left the window while pinned: the last unpin recycles it
}

func (c *chunk) end() int64 { return c.off + int64(len(c.buf)) }

// chunkPool recycles chunk buffers across transfers. It is bounded: beyond
// its capacity, buffers go to the garbage collector.
type chunkPool struct {
	size int
	free chan []byte
}

func newChunkPool(size, keep int) *chunkPool {
	return &chunkPool{size: size, free: make(chan []byte, keep)}
}

func (p *chunkPool) get() []byte {
	select {
	case b := <-p.free:
		return b[:0]
	default:
		return make([]byte, 0, p.size)
	}
}

func (p *chunkPool) put(b []byte) {
	if cap(b) != p.size {
		return
	}
	select {
	case p.free <- b:
	default:
	}
}

// windowChunk returns the chunk holding off, or nil. t.mu is held.
func (t *Transfer) windowChunk(off int64) *chunk {
	if len(t.chunks) == 0 || off < t.chunks[0].off {
		return nil
	}
	// Chunks are equal-sized and contiguous except the first after a
	// restart, so index arithmetic from the front is exact.
	i := int((off - t.chunks[0].off) / int64(t.m.pool.size))
	if i < len(t.chunks) && t.chunks[i].off <= off && off < t.chunks[i].end() {
		return t.chunks[i]
	}
	for _, c := range t.chunks {
		if c.off <= off && off < c.end() {
			return c
		}
	}
	return nil
}

// evictable says whether the oldest chunk c may leave the window. t.mu is
// held. A chunk stays while someone is using its bytes, while the spool has
// not got them yet, or, when nothing spools, while a reader has still to
// read them: in memory mode the window is the only copy.
func (t *Transfer) evictable(c *chunk) bool {
	if c.pins > 0 || c.end() > t.written || (c.end() == t.received && !t.done) {
		return false // in use, not hashed yet, or the chunk being filled
	}
	if t.spool != nil {
		return c.end() <= t.spool.filed
	}
	if len(t.readers) == 0 {
		return false // paused: keep what a returning reader (Range) may want
	}
	for _, r := range t.readers {
		if r.needs(c) {
			return false
		}
	}
	return true
}

// evict drops the chunks that may go from the front of the window. t.mu is
// held. A finished transfer that spools drops its window as the spool
// catches up: a lingering transfer keeps only its file.
func (t *Transfer) evict() {
	for len(t.chunks) > 0 && t.evictable(t.chunks[0]) {
		t.drop(t.chunks[0])
		t.chunks = t.chunks[1:]
	}
}

// drop retires a chunk that left the window. t.mu is held.
func (t *Transfer) drop(c *chunk) {
	if c.pins > 0 {
		c.dropped = true
		return
	}
	t.m.pool.put(c.buf)
	c.buf = nil
}

// unpin ends a use of c's bytes outside the lock. t.mu is held.
func (t *Transfer) unpin(c *chunk) {
	c.pins--
	if c.pins == 0 && c.dropped {
		t.m.pool.put(c.buf)
		c.buf = nil
	}
}

// dropWindow retires every chunk (a restart, or the end of the transfer).
// t.mu is held.
func (t *Transfer) dropWindow() {
	for _, c := range t.chunks {
		t.drop(c)
	}
	t.chunks = nil
}

// servableFrom is the first offset a new reader could be given: 0 unless the
// window has moved on with nothing spooling its bytes.
func (t *Transfer) servableFrom() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	switch {
	case t.spool != nil:
		return t.spool.start
	case len(t.chunks) > 0:
		return t.chunks[0].off
	}
	return t.received
}
