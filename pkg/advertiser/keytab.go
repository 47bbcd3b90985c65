package advertiser

// keytab is the one table of the keys the advertiser knows: the digests and
// tag keys some image or orphan blob needs, and those the Router holds or may
// hold. Each key is held once, a sha256 digest as its 32 bytes, and every
// per-key fact (references, listings, orphan clock, Router state) is a field
// of its entry, so that images hold 4-byte ids and no set duplicates a key.
// Keys leave the table as soon as nothing holds them (release). Callers
// outside the advertiser's lock speak of keys by name, never by id: an id is
// reused once its entry is released.
//
// It is not safe for concurrent use; the advertiser's mutex guards it.
type keytab struct {
	entries []entry
	free    []keyID
	bySum   map[[32]byte]keyID
	// Keys that are not canonical sha256 digests: tag keys and sha512
	// digests, a few per image at most.
	byName map[string]keyID
	names  map[keyID]string
	// advertised counts the entries with fAdvertised (the
	// shoal_advertised_keys gauge).
	advertised int
}

type keyID uint32

type entry struct {
	sum   [32]byte // a sha256 digest; zero for keys held in names
	refs  int32    // images whose last walk has the key
	stamp uint64   // an orphan's event clock: a resync that began earlier knows nothing of it
	listing
	flags keyFlags
}

type keyFlags uint8

const (
	fLive       keyFlags = 1 << iota // the entry holds a key (not on the free list)
	fOrphan                          // a committed blob no image claims yet
	fUnclaimed                       // an orphan a resync already found unclaimed
	fAdvertised                      // the Router accepted the key
	fTried                           // an Advertise of the key failed: the Router may hold it
	fDirty                           // to reconcile with the Router
	fBusy                            // a Router call for the key is in flight
)

// pinning are the flags that keep an entry without references in the table.
const pinning = fOrphan | fAdvertised | fTried | fDirty | fBusy

func newKeytab() *keytab {
	return &keytab{bySum: map[[32]byte]keyID{}, byName: map[string]keyID{}, names: map[keyID]string{}}
}

// find returns the id of key k, if the table holds it.
func (t *keytab) find(k string) (keyID, bool) {
	if sum, ok := parseSHA256(k); ok {
		id, ok := t.bySum[sum]
		return id, ok
	}
	id, ok := t.byName[k]
	return id, ok
}

// intern returns the id of k, adding an empty entry when it is new.
func (t *keytab) intern(k string) keyID {
	if id, ok := t.find(k); ok {
		return id
	}
	var id keyID
	if n := len(t.free); n > 0 {
		id, t.free = t.free[n-1], t.free[:n-1]
	} else {
		id = keyID(len(t.entries))
		t.entries = append(t.entries, entry{})
	}
	e := entry{flags: fLive}
	if sum, ok := parseSHA256(k); ok {
		e.sum = sum
		t.bySum[sum] = id
	} else {
		t.byName[k] = id
		t.names[id] = k
	}
	t.entries[id] = e
	return id
}

// at returns id's entry. The pointer is valid until the next intern.
func (t *keytab) at(id keyID) *entry { return &t.entries[id] }

// key renders id's key.
func (t *keytab) key(id keyID) string {
	if k, ok := t.names[id]; ok {
		return k
	}
	return formatSHA256(t.entries[id].sum)
}

// isDigest tells a blob's key from a tag key.
func (t *keytab) isDigest(id keyID) bool {
	k, named := t.names[id]
	return !named || isDigestKey(k)
}

// set and clear change id's Router flags, keeping the advertised count.
func (t *keytab) set(id keyID, f keyFlags) {
	e := t.at(id)
	if f&fAdvertised != 0 && e.flags&fAdvertised == 0 {
		t.advertised++
	}
	e.flags |= f
}

func (t *keytab) clear(id keyID, f keyFlags) {
	e := t.at(id)
	if f&fAdvertised != 0 && e.flags&fAdvertised != 0 {
		t.advertised--
	}
	e.flags &^= f
}

// has reports whether k is in the table with every flag of f.
func (t *keytab) has(k string, f keyFlags) bool {
	id, ok := t.find(k)
	return ok && t.at(id).flags&f == f
}

// release frees id's entry when nothing holds it any more.
func (t *keytab) release(id keyID) {
	e := t.at(id)
	if e.flags&fLive == 0 || e.refs > 0 || e.flags&pinning != 0 {
		return
	}
	if k, ok := t.names[id]; ok {
		delete(t.byName, k)
		delete(t.names, id)
	} else {
		delete(t.bySum, e.sum)
	}
	*e = entry{}
	t.free = append(t.free, id)
}

// each calls fn for every key in the table. fn may change flags and
// release entries, but not intern.
func (t *keytab) each(fn func(keyID, *entry)) {
	for i := range t.entries {
		if t.entries[i].flags&fLive != 0 {
			fn(keyID(i), &t.entries[i])
		}
	}
}

// keys renders the keys whose entries match.
func (t *keytab) keys(match func(*entry) bool) []string {
	var out []string
	t.each(func(id keyID, e *entry) {
		if match(e) {
			out = append(out, t.key(id))
		}
	})
	return out
}

const sha256Prefix = "sha256:"

// parseSHA256 decodes a canonical sha256 digest: the prefix and 64 lowercase
// hex digits, so that formatSHA256 gives back the same string. Anything
// else (an upper-case digest a store could hold, a tag key) is held by name.
func parseSHA256(k string) (sum [32]byte, ok bool) {
	if len(k) != len(sha256Prefix)+64 || k[:len(sha256Prefix)] != sha256Prefix {
		return sum, false
	}
	h := k[len(sha256Prefix):]
	for i := range sum {
		hi, ok1 := fromHex(h[2*i])
		lo, ok2 := fromHex(h[2*i+1])
		if !ok1 || !ok2 {
			return sum, false
		}
		sum[i] = hi<<4 | lo
	}
	return sum, true
}

func fromHex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	}
	return 0, false
}

func formatSHA256(sum [32]byte) string {
	const digits = "0123456789abcdef"
	b := make([]byte, len(sha256Prefix)+64)
	copy(b, sha256Prefix)
	for i, v := range sum {
		b[len(sha256Prefix)+2*i] = digits[v>>4]
		b[len(sha256Prefix)+2*i+1] = digits[v&0xf]
	}
	return string(b)
}
