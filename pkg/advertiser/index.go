package advertiser

import (
	"slices"
	"strings"
)

// imageState is what one walk found for one image name.
type imageState struct {
	target string   // digest of the image's root (index or manifest)
	size   int64    // sum of the sizes of its present blobs
	keys   []string // present digests, and the tag key, each once
}

func (st imageState) has(k string) bool { return slices.Contains(st.keys, k) }

// orphan is a blob announced by a content event that no image claims yet: a
// layer of a pull still running, shareable the moment it is committed.
type orphan struct {
	stamp     uint64 // clock of its event; a resync that began at an earlier clock knows nothing of it
	unclaimed bool   // a resync already found no image claiming it
	listing          // its blob's presence in content listings
}

// listing is a key's presence in the light resync's content listings:
// added is the listing generation in which the key (last) entered the
// index, seen the last one that listed its blob. A blob that entered during
// a listing may have been committed after the listing passed its place, so
// only keys older than the listing count as gone when it misses them.
type listing struct {
	added, seen uint32
}

// keyRef is a key held by images: how many, and its listings.
type keyRef struct {
	n int32
	listing
}

// index is the wanted set: every key some image or orphan blob needs. It is
// pure bookkeeping with no I/O; each mutation returns the keys it touched, so
// the caller can diff just those against what the Router was told.
type index struct {
	images  map[string]imageState
	refs    map[string]keyRef // key -> image names whose walk has it
	orphans map[string]*orphan
	gen     uint32 // the current content listing (beginListing)
}

func newIndex() *index {
	return &index{images: map[string]imageState{}, refs: map[string]keyRef{}, orphans: map[string]*orphan{}}
}

// wanted reports whether any image or orphan needs key.
func (ix *index) wanted(key string) bool { return ix.refs[key].n > 0 || ix.orphans[key] != nil }

func (ix *index) ref(k string) {
	r, ok := ix.refs[k]
	if !ok {
		r.added = ix.gen
	}
	r.n++
	ix.refs[k] = r
}

// setImage replaces what name holds. An orphan the image now claims stops
// being an orphan: the image's reference keeps it, and deleting the image
// withdraws it.
func (ix *index) setImage(name string, st imageState) []string {
	old := ix.images[name]
	touched := unionKeys(old.keys, st.keys)
	for _, k := range old.keys {
		ix.unref(k)
	}
	for _, k := range st.keys {
		ix.ref(k)
		delete(ix.orphans, k)
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
	for _, k := range old.keys {
		ix.unref(k)
	}
	delete(ix.images, name)
	return slices.Clone(old.keys)
}

func (ix *index) unref(k string) {
	r := ix.refs[k]
	if r.n--; r.n <= 0 {
		delete(ix.refs, k)
		return
	}
	ix.refs[k] = r
}

// addOrphan records a committed blob. One that an image already claims needs
// no orphan entry.
func (ix *index) addOrphan(dgst string, stamp uint64) []string {
	if r, ok := ix.refs[dgst]; ok {
		// Committed again (after a GC, say) during a listing that may
		// have missed it: not gone.
		r.added = ix.gen
		ix.refs[dgst] = r
		return nil
	}
	if o := ix.orphans[dgst]; o != nil {
		o.added = ix.gen
		return nil
	}
	ix.orphans[dgst] = &orphan{stamp: stamp, listing: listing{added: ix.gen}}
	return []string{dgst}
}

// removeContent forgets a blob that was deleted from the content store,
// wherever it is held: it can no longer be served.
func (ix *index) removeContent(dgst string) []string {
	hit := ix.orphans[dgst] != nil
	delete(ix.orphans, dgst)
	for name, st := range ix.images {
		if !st.has(dgst) {
			continue
		}
		// A copy: a walk's result may still be shared with a caller.
		st.keys = slices.DeleteFunc(slices.Clone(st.keys), func(k string) bool { return k == dgst })
		ix.images[name] = st
		ix.unref(dgst)
		hit = true
	}
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
	if r, ok := ix.refs[d]; ok {
		r.seen = gen
		ix.refs[d] = r
	}
	if o := ix.orphans[d]; o != nil {
		o.seen = gen
	}
}

// present reports whether the listing gen found d, or d entered the index
// during it (and may have been committed after the listing passed it).
func (ix *index) present(d string, gen uint32) bool {
	if r, ok := ix.refs[d]; ok {
		return r.seen == gen || r.added >= gen
	}
	if o := ix.orphans[d]; o != nil {
		return o.seen == gen || o.added >= gen
	}
	return false
}

// unlisted returns the digests the index holds that the listing gen did not
// find: blobs deleted without an event (garbage collection).
func (ix *index) unlisted(gen uint32) []string {
	var gone []string
	for k, r := range ix.refs {
		if r.seen != gen && r.added < gen && isDigestKey(k) {
			gone = append(gone, k)
		}
	}
	return gone
}

// holders returns the images that hold any of keys.
func (ix *index) holders(keys []string) []string {
	if len(keys) == 0 {
		return nil
	}
	set := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		set[k] = struct{}{}
	}
	var out []string
	for name, st := range ix.images {
		for _, k := range st.keys {
			if _, ok := set[k]; ok {
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
	for d, o := range ix.orphans {
		if o.stamp > start {
			continue
		}
		if !present(d) || o.unclaimed && !ingesting {
			delete(ix.orphans, d)
			touched = append(touched, d)
			continue
		}
		o.unclaimed = true
	}
	return touched
}

// diff splits keys into those to advertise (wanted, not yet accepted by the
// Router) and those to withdraw (no longer wanted, and accepted or tried: a
// failed Advertise may still have taken some keys, and Withdraw is
// idempotent). Each key is listed once.
func diff(wanted func(string) bool, accepted, tried map[string]struct{}, keys []string) (add, remove []string) {
	seen := make(map[string]struct{}, len(keys))
	for _, k := range keys {
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		_, have := accepted[k]
		_, maybe := tried[k]
		switch w := wanted(k); {
		case w && !have:
			add = append(add, k)
		case !w && (have || maybe):
			remove = append(remove, k)
		}
	}
	return add, remove
}

func unionKeys(a, b []string) []string {
	out := make([]string, 0, len(a)+len(b))
	out = append(out, a...)
	for _, k := range b {
		if !slices.Contains(a, k) {
			out = append(out, k)
		}
	}
	return out
}
