package advertiser

import "slices"

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
}

// index is the wanted set: every key some image or orphan blob needs. It is
// pure bookkeeping with no I/O; each mutation returns the keys it touched, so
// the caller can diff just those against what the Router was told.
type index struct {
	images  map[string]imageState
	refs    map[string]int // key -> number of image names whose walk has it
	orphans map[string]*orphan
}

func newIndex() *index {
	return &index{images: map[string]imageState{}, refs: map[string]int{}, orphans: map[string]*orphan{}}
}

// wanted reports whether any image or orphan needs key.
func (ix *index) wanted(key string) bool { return ix.refs[key] > 0 || ix.orphans[key] != nil }

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
		ix.refs[k]++
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
	if ix.refs[k]--; ix.refs[k] <= 0 {
		delete(ix.refs, k)
	}
}

// addOrphan records a committed blob. One that an image already claims needs
// no orphan entry.
func (ix *index) addOrphan(dgst string, stamp uint64) []string {
	if ix.refs[dgst] > 0 || ix.orphans[dgst] != nil {
		return nil
	}
	ix.orphans[dgst] = &orphan{stamp: stamp}
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
