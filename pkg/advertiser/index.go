package advertiser

import (
	"slices"
	"strings"
)

// found is what one walk found for one image name.
type found struct {
	target string   // digest of the image's root (index or manifest)
	size   int64    // sum of the sizes of its present blobs
	keys   []string // present digests, and the tag key, each once
}

func (f found) has(k string) bool { return slices.Contains(f.keys, k) }

// imageState is what the index holds for one image name: its walk's keys as
// ids into the keytab.
type imageState struct {
	target string
	size   int64
	keys   []keyID
}

// listing is a key's presence in the light resync's content listings:
// added is the listing generation in which the key (last) entered the
// index, seen the last one that listed its blob. A blob that entered during
// a listing may have been committed after the listing passed its place, so
// only keys older than the listing count as gone when it misses them.
type listing struct {
	added, seen uint32
}

// index is the wanted set: every key some image or orphan blob needs (an
// orphan is a blob announced by a content event that no image claims yet: a
// layer of a pull still running, shareable the moment it is committed). It
// is pure bookkeeping with no I/O; each mutation returns the keys it
// touched, so the caller can diff just those against what the Router was
// told. Its keys live in the keytab, which it shares with the Router state.
type index struct {
	keys   *keytab
	images map[string]imageState
	gen    uint32 // the current content listing (beginListing)
}

func newIndex() *index {
	return &index{keys: newKeytab(), images: map[string]imageState{}}
}

// held reports whether any image or orphan needs e.
func held(e *entry) bool { return e.refs > 0 || e.flags&fOrphan != 0 }

// wanted reports whether any image or orphan needs key.
func (ix *index) wanted(key string) bool {
	id, ok := ix.keys.find(key)
	return ok && held(ix.keys.at(id))
}

func (ix *index) ref(k string) keyID {
	id := ix.keys.intern(k)
	e := ix.keys.at(id)
	if e.refs == 0 {
		e.added = ix.gen
	}
	e.refs++
	return id
}

func (ix *index) unref(id keyID) {
	e := ix.keys.at(id)
	if e.refs--; e.refs <= 0 {
		e.refs = 0
		ix.keys.release(id)
	}
}

// setImage replaces what name holds. An orphan the image now claims stops
// being an orphan: the image's reference keeps it, and deleting the image
// withdraws it.
func (ix *index) setImage(name string, f found) []string {
	old := ix.images[name]
	touched := ix.render(old.keys)
	for _, k := range f.keys {
		if !slices.Contains(touched, k) {
			touched = append(touched, k)
		}
	}
	for _, id := range old.keys {
		ix.unref(id)
	}
	st := imageState{target: f.target, size: f.size, keys: make([]keyID, len(f.keys))}
	for i, k := range f.keys {
		st.keys[i] = ix.ref(k)
		ix.keys.clear(st.keys[i], fOrphan|fUnclaimed)
	}
	ix.images[name] = st
	return touched
}

// deleteImage forgets name.
func (ix *index) deleteImage(name string) []string {
	old, ok := ix.images[name]
	if !ok {
		return nil
	}
	touched := ix.render(old.keys)
	for _, id := range old.keys {
		ix.unref(id)
	}
	delete(ix.images, name)
	return touched
}

func (ix *index) render(ids []keyID) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = ix.keys.key(id)
	}
	return out
}

// addOrphan records a committed blob. One that an image already claims needs
// no orphan flag.
func (ix *index) addOrphan(dgst string, stamp uint64) []string {
	id := ix.keys.intern(dgst)
	e := ix.keys.at(id)
	if held(e) {
		// Committed again (after a GC, say) during a listing that may
		// have missed it: not gone.
		e.added = ix.gen
		return nil
	}
	e.flags |= fOrphan
	e.flags &^= fUnclaimed
	e.stamp = stamp
	e.added = ix.gen
	return []string{dgst}
}

// removeContent forgets a blob that was deleted from the content store,
// wherever it is held: it can no longer be served.
func (ix *index) removeContent(dgst string) []string {
	id, ok := ix.keys.find(dgst)
	if !ok {
		return nil
	}
	hit := ix.keys.at(id).flags&fOrphan != 0
	ix.keys.clear(id, fOrphan|fUnclaimed)
	for name, st := range ix.images {
		i := slices.Index(st.keys, id)
		if i < 0 {
			continue
		}
		st.keys = slices.Delete(st.keys, i, i+1) // the index's own slice
		ix.images[name] = st
		ix.unref(id)
		hit = true
	}
	ix.keys.release(id)
	if !hit {
		return nil
	}
	return []string{dgst}
}

// beginListing starts a content listing and returns its generation.
func (ix *index) beginListing() uint32 {
	ix.gen++
	return ix.gen
}

// listed records that the listing gen found blob d.
func (ix *index) listed(d string, gen uint32) {
	if id, ok := ix.keys.find(d); ok {
		if e := ix.keys.at(id); held(e) {
			e.seen = gen
		}
	}
}

// present reports whether the listing gen found d, or d entered the index
// during it (and may have been committed after the listing passed it).
func (ix *index) present(d string, gen uint32) bool {
	id, ok := ix.keys.find(d)
	if !ok {
		return false
	}
	e := ix.keys.at(id)
	return held(e) && (e.seen == gen || e.added >= gen)
}

// unlisted returns the digests images hold that the listing gen did not
// find: blobs deleted without an event (garbage collection). Orphans age in
// ageOrphans instead.
func (ix *index) unlisted(gen uint32) []string {
	var gone []string
	ix.keys.each(func(id keyID, e *entry) {
		if e.refs > 0 && e.seen != gen && e.added < gen && ix.keys.isDigest(id) {
			gone = append(gone, ix.keys.key(id))
		}
	})
	return gone
}

// holders returns the images that hold any of keys.
func (ix *index) holders(keys []string) []string {
	if len(keys) == 0 {
		return nil
	}
	set := make(map[keyID]struct{}, len(keys))
	for _, k := range keys {
		if id, ok := ix.keys.find(k); ok {
			set[id] = struct{}{}
		}
	}
	var out []string
	for name, st := range ix.images {
		for _, id := range st.keys {
			if _, ok := set[id]; ok {
				out = append(out, name)
				break
			}
		}
	}
	return out
}

// isDigestKey tells a blob's key from a tag key: tag keys have a registry
// host before their first '/', digests none.
func isDigestKey(k string) bool {
	return strings.HasPrefix(k, "sha256:") || strings.HasPrefix(k, "sha512:")
}

// ageOrphans runs at the end of a resync that began at clock start. An orphan
// seen by then (stamp <= start) is dropped when its blob is gone, or when this is the
// second resync in a row to find it unclaimed and no pull is in progress
// (ingesting): a pull can take longer than one resync interval.
func (ix *index) ageOrphans(start uint64, present func(string) bool, ingesting bool) []string {
	var touched []string
	ix.keys.each(func(id keyID, e *entry) {
		if e.flags&fOrphan == 0 || e.stamp > start {
			return
		}
		d := ix.keys.key(id)
		if !present(d) || e.flags&fUnclaimed != 0 && !ingesting {
			ix.keys.clear(id, fOrphan|fUnclaimed)
			ix.keys.release(id)
			touched = append(touched, d)
			return
		}
		e.flags |= fUnclaimed
	})
	return touched
}

// diff splits keys into those to advertise (wanted, not yet accepted by the
// Router) and those to withdraw (no longer wanted, and accepted or tried: a
// failed Advertise may still have taken some keys, and Withdraw is
// idempotent). Each key is listed once.
func diff(wanted, accepted, tried func(string) bool, keys []string) (add, remove []string) {
	seen := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		switch w := wanted(k); {
		case w && !accepted(k):
			add = append(add, k)
		case !w && (accepted(k) || tried(k)):
			remove = append(remove, k)
		}
	}
	return add, remove
}
