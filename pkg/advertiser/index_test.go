package advertiser

import (
	"maps"
	"slices"
	"testing"
)

// Short stand-ins for digests and tag keys: the index does not parse keys.
const (
	idx  = "sha256:index"
	man  = "sha256:manifest"
	cfg  = "sha256:config"
	l1   = "sha256:layer1"
	l2   = "sha256:layer2"
	l3   = "sha256:layer3"
	man2 = "sha256:manifest2"
	cfg2 = "sha256:config2"
	tagA = "reg.test/app:v1"
	tagB = "reg.test/other:v1"
)

func state(target string, keys ...string) found {
	st := found{target: target}
	for _, k := range keys {
		if !slices.Contains(st.keys, k) {
			st.keys = append(st.keys, k)
		}
	}
	return st
}

type step struct {
	what       string
	op         func(ix *index) []string
	add, remov []string // the diff this step must produce
}

func set(name string, st found) func(*index) []string {
	return func(ix *index) []string { return ix.setImage(name, st) }
}

func del(name string) func(*index) []string {
	return func(ix *index) []string { return ix.deleteImage(name) }
}

func orphanAt(d string, stamp uint64) func(*index) []string {
	return func(ix *index) []string { return ix.addOrphan(d, stamp) }
}

func contentGone(d string) func(*index) []string {
	return func(ix *index) []string { return ix.removeContent(d) }
}

// resyncAt ages orphans as a resync begun at start would; present lists the
// blobs still in the store, ingesting whether a pull runs.
func resyncAt(start uint64, ingesting bool, present ...string) func(*index) []string {
	return func(ix *index) []string {
		return ix.ageOrphans(start, func(d string) bool { return slices.Contains(present, d) }, ingesting)
	}
}

func TestIndexDiff(t *testing.T) {
	appV1 := state(man, man, cfg, l1, l2, tagA)
	other := state(man2, man2, cfg2, l1, l3, tagB) // shares l1 with app
	tests := []struct {
		name  string
		steps []step
	}{
		{"two images sharing a layer, delete one", []step{
			{"app", set("reg.test/app:v1", appV1), []string{cfg, l1, l2, man, tagA}, nil},
			{"other", set("reg.test/other:v1", other), []string{cfg2, l3, man2, tagB}, nil},
			{"delete app: l1 stays for other", del("reg.test/app:v1"), nil, []string{cfg, l2, man, tagA}},
			{"delete other", del("reg.test/other:v1"), nil, []string{cfg2, l1, l3, man2, tagB}},
		}},
		{"CRI's three names for one image", []step{
			{"tag", set("reg.test/app:v1", appV1), []string{cfg, l1, l2, man, tagA}, nil},
			{"digest name", set("reg.test/app@"+man, state(man, man, cfg, l1, l2)), nil, nil},
			{"image id", set(cfg, state(man, man, cfg, l1, l2)), nil, nil},
			{"untag", del("reg.test/app:v1"), nil, []string{tagA}},
			{"digest name gone", del("reg.test/app@" + man), nil, nil},
			{"id gone", del(cfg), nil, []string{cfg, l1, l2, man}},
		}},
		{"tag moved to a new digest", []step{
			{"v1", set("reg.test/app:v1", appV1), []string{cfg, l1, l2, man, tagA}, nil},
			{"v1 now points at manifest2 (keeps l1)", set("reg.test/app:v1", state(man2, man2, cfg2, l1, l3, tagA)),
				[]string{cfg2, l3, man2}, []string{cfg, l2, man}},
		}},
		{"same walk twice changes nothing", []step{
			{"app", set("reg.test/app:v1", appV1), []string{cfg, l1, l2, man, tagA}, nil},
			{"again", set("reg.test/app:v1", state(man, man, cfg, l1, l2, tagA)), nil, nil},
			{"delete unknown", del("reg.test/nope:v1"), nil, nil},
		}},
		{"content GC'd between resyncs", []step{
			{"app", set("reg.test/app:v1", appV1), []string{cfg, l1, l2, man, tagA}, nil},
			{"resync finds l2 gone", set("reg.test/app:v1", state(man, man, cfg, l1, tagA)), nil, []string{l2}},
			{"resync finds the manifest gone: no tag key either", set("reg.test/app:v1", state(man, cfg, l1)), nil, []string{man, tagA}},
		}},
		{"walk completes as content arrives (event before content)", []step{
			{"root only", set("reg.test/app:v1", state(idx, idx, tagA)), []string{idx, tagA}, nil},
			{"manifest and config", set("reg.test/app:v1", state(idx, idx, man, cfg, tagA)), []string{cfg, man}, nil},
			{"layers", set("reg.test/app:v1", state(idx, idx, man, cfg, l1, l2, tagA)), []string{l1, l2}, nil},
		}},
		{"orphan claimed by an image, then the image deleted", []step{
			{"layer committed", orphanAt(l1, 1), []string{l1}, nil},
			{"layer again (no-op)", orphanAt(l1, 2), nil, nil},
			{"image claims it", set("reg.test/app:v1", appV1), []string{cfg, l2, man, tagA}, nil},
			{"commit of a claimed blob is no orphan", orphanAt(l2, 3), nil, nil},
			{"image deleted: nothing keeps l1", del("reg.test/app:v1"), nil, []string{cfg, l1, l2, man, tagA}},
		}},
		{"unclaimed orphan lives through one resync", []step{
			{"layer committed", orphanAt(l3, 5), []string{l3}, nil},
			{"resync that began before it ignores it", resyncAt(4, false), nil, nil},
			{"first resync after: kept", resyncAt(6, false, l3), nil, nil},
			{"second: withdrawn", resyncAt(7, false, l3), nil, []string{l3}},
		}},
		{"orphan kept while a pull runs", []step{
			{"layer committed", orphanAt(l3, 1), []string{l3}, nil},
			{"resync", resyncAt(2, true, l3), nil, nil},
			{"resync, still pulling", resyncAt(3, true, l3), nil, nil},
			{"resync, pull over", resyncAt(4, false, l3), nil, []string{l3}},
		}},
		{"orphan GC'd", []step{
			{"layer committed", orphanAt(l3, 1), []string{l3}, nil},
			{"resync, blob gone", resyncAt(2, true), nil, []string{l3}},
		}},
		{"content deleted by event", []step{
			{"app", set("reg.test/app:v1", appV1), []string{cfg, l1, l2, man, tagA}, nil},
			{"other", set("reg.test/other:v1", other), []string{cfg2, l3, man2, tagB}, nil},
			{"l1 deleted: gone from both", contentGone(l1), nil, []string{l1}},
			{"other deleted", del("reg.test/other:v1"), nil, []string{cfg2, l3, man2, tagB}},
			{"orphan deleted", orphanAt(l1, 9), []string{l1}, nil},
			{"again", contentGone(l1), nil, []string{l1}},
			{"unknown", contentGone("sha256:nope"), nil, nil},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ix := newIndex()
			advertised := map[string]struct{}{}
			for _, s := range tt.steps {
				touched := s.op(ix)
				add, remove := diff(ix.wanted, inSet(advertised), none, touched)
				slices.Sort(add)
				slices.Sort(remove)
				slices.Sort(s.add)
				slices.Sort(s.remov)
				if !slices.Equal(add, s.add) || !slices.Equal(remove, s.remov) {
					t.Fatalf("%s: advertise %v withdraw %v; want %v and %v", s.what, add, remove, s.add, s.remov)
				}
				for _, k := range add {
					advertised[k] = struct{}{}
				}
				for _, k := range remove {
					delete(advertised, k)
				}
				// The touched keys were enough: a full diff finds nothing more.
				all := slices.Collect(maps.Keys(advertised))
				all = append(all, ix.heldKeys()...)
				if add, remove := diff(ix.wanted, inSet(advertised), none, all); len(add)+len(remove) > 0 {
					t.Fatalf("%s: full diff still finds +%v -%v", s.what, add, remove)
				}
				// Unwanted keys leave the table (here the Router's state is
				// the test's map, not the table's flags).
				if n := len(ix.keys.keys(func(*entry) bool { return true })); n != len(ix.heldKeys()) {
					t.Fatalf("%s: table holds %d keys, %d of them wanted", s.what, n, len(ix.heldKeys()))
				}
			}
		})
	}
}

func TestDiff(t *testing.T) {
	wanted := func(k string) bool { return k == "a" || k == "t1" }
	accepted := map[string]struct{}{"b": {}}
	tried := map[string]struct{}{"t1": {}, "t2": {}} // their Advertise failed
	add, remove := diff(wanted, inSet(accepted), inSet(tried), []string{"a", "a", "b", "b", "c", "t1", "t2"})
	// t1 is retried; t2, no longer wanted, is withdrawn although never confirmed.
	if !slices.Equal(add, []string{"a", "t1"}) || !slices.Equal(remove, []string{"b", "t2"}) {
		t.Fatalf("add %v remove %v", add, remove)
	}
}

func inSet(m map[string]struct{}) func(string) bool {
	return func(k string) bool { _, ok := m[k]; return ok }
}

func none(string) bool { return false }

// heldKeys lists every key an image or orphan needs.
func (ix *index) heldKeys() []string { return ix.keys.keys(held) }
