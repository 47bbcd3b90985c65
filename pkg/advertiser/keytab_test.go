package advertiser

import (
	"crypto/sha256"
	"fmt"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"
)

func TestSHA256RoundTrip(t *testing.T) {
	d := fmt.Sprintf("sha256:%x", sha256.Sum256([]byte("x")))
	tests := []struct {
		key    string
		packed bool // held as 32 bytes
	}{
		{d, true},
		{"sha256:" + "ABCDEF" + d[13:], false}, // upper case: formatSHA256 would not give it back
		{d[:len(d)-1], false},
		{d + "0", false},
		{"sha512:" + d[7:] + d[7:], false},
		{"reg.test/app:v1", false},
		{"sha256:" + d[8:] + "g", false},
	}
	for _, tt := range tests {
		sum, ok := parseSHA256(tt.key)
		if ok != tt.packed {
			t.Errorf("parseSHA256(%q) ok=%v, want %v", tt.key, ok, tt.packed)
		}
		if ok && formatSHA256(sum) != tt.key {
			t.Errorf("formatSHA256(parseSHA256(%q)) = %q", tt.key, formatSHA256(sum))
		}
		tab := newKeytab()
		id := tab.intern(tt.key)
		if got := tab.key(id); got != tt.key {
			t.Errorf("key(intern(%q)) = %q", tt.key, got)
		}
		if again := tab.intern(tt.key); again != id {
			t.Errorf("intern(%q) twice: ids %d and %d", tt.key, id, again)
		}
		if _, named := tab.names[id]; named == tt.packed {
			t.Errorf("%q held by name: %v, want %v", tt.key, named, !tt.packed)
		}
	}
}

func TestKeytabRelease(t *testing.T) {
	tab := newKeytab()
	a := tab.intern("sha256:" + fmt.Sprintf("%x", sha256.Sum256([]byte("a"))))
	b := tab.intern("reg.test/b:v1")
	tab.set(a, fAdvertised)
	tab.at(b).refs = 1
	tab.release(a)
	tab.release(b)
	if n := len(tab.keys(func(*entry) bool { return true })); n != 2 || tab.advertised != 1 {
		t.Fatalf("held entries released: %d left, %d advertised", n, tab.advertised)
	}
	tab.clear(a, fAdvertised)
	tab.at(b).refs = 0
	tab.release(a)
	tab.release(b)
	if n := len(tab.keys(func(*entry) bool { return true })); n != 0 || tab.advertised != 0 || len(tab.bySum)+len(tab.byName)+len(tab.names) != 0 {
		t.Fatalf("after release: %d entries, %d advertised, maps %d/%d/%d", n, tab.advertised, len(tab.bySum), len(tab.byName), len(tab.names))
	}
	// Freed ids are reused, so the table does not grow with churn.
	c := tab.intern("reg.test/c:v1")
	d := tab.intern("reg.test/d:v1")
	if got := []keyID{c, d}; !slices.Contains(got, a) || !slices.Contains(got, b) || len(tab.entries) != 2 {
		t.Fatalf("ids %v after freeing %d and %d; %d entries", got, a, b, len(tab.entries))
	}
	if tab.key(c) != "reg.test/c:v1" || tab.key(d) != "reg.test/d:v1" {
		t.Fatalf("reused ids render %q, %q", tab.key(c), tab.key(d))
	}
}

// FuzzKeyRoundTrip: every key comes back from the table and from the walker's
// cache exactly as it went in, whichever way it is held.
func FuzzKeyRoundTrip(f *testing.F) {
	f.Add(fmt.Sprintf("sha256:%x", sha256.Sum256(nil)))
	f.Add("sha256:ABCD")
	f.Add("reg.test/app:v1")
	f.Fuzz(func(t *testing.T, k string) {
		tab := newKeytab()
		if got := tab.key(tab.intern(k)); got != k {
			t.Fatalf("table: %q became %q", k, got)
		}
		if got := newChild(digest.Digest(k), false).digest(); string(got) != k {
			t.Fatalf("walker: %q became %q", k, got)
		}
	})
}
