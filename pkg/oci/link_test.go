package oci

import (
	"errors"
	"strings"
	"testing"
)

func TestNextLink(t *testing.T) {
	tests := []struct {
		values []string
		want   string
		ok     bool
	}{
		{nil, "", true},
		{[]string{""}, "", true},
		// distribution and Docker Hub.
		{[]string{`</v2/library/nginx/tags/list?last=1.25&n=100>; rel="next"`}, "/v2/library/nginx/tags/list?last=1.25&n=100", true},
		{[]string{`<https://r.example/v2/a/tags/list?n=2&last=b>;rel=next`}, "https://r.example/v2/a/tags/list?n=2&last=b", true},
		{[]string{`</x>; rel="prev", </y>; rel="next"`}, "/y", true},
		{[]string{`</x>; rel="prev"`, `</y>; REL="Next Last"`}, "/y", true},
		{[]string{`</a,b>; rel="next"`}, "/a,b", true},
		{[]string{`</x>; title="a, \"quoted\"; b"; rel=next`}, "/x", true},
		{[]string{`</x>; rel="next"; rel="prev"`}, "/x", true}, // the first rel counts
		{[]string{`</x>; rel="prev"; rel="next"`}, "", true},
		{[]string{`</x>; rel="nextpage"`}, "", true},
		{[]string{`</x>; crossorigin; rel=next`}, "/x", true},
		{[]string{`</a>; rel=next, </b>; rel=next`}, "/a", true},
		{[]string{` , </a>; rel=next ,`}, "/a", true},
		{[]string{`/x; rel=next`}, "", false},
		{[]string{`</x; rel=next`}, "", false},
		{[]string{`<>; rel=next`}, "", false},
		{[]string{`</x y>; rel=next`}, "", false},
		{[]string{"</x\x00>; rel=next"}, "", false},
		{[]string{`</x> rel=next`}, "", false},
		{[]string{`</x>; rel="next`}, "", false},
		{[]string{`</x>; ="next"`}, "", false},
		{[]string{`</x>; rel=`}, "", false},
		{[]string{"</x>; rel=\"a\x01\""}, "", false},
		{[]string{`</a>; rel=next`, `garbage`}, "", false},
		{[]string{`<` + strings.Repeat("a", 70<<10) + `>; rel=next`}, "", false},
	}
	for _, tt := range tests {
		got, err := NextLink(tt.values)
		if !tt.ok {
			if !errors.Is(err, ErrLinkInvalid) {
				t.Errorf("NextLink(%.60q) = %q, %v; want ErrLinkInvalid", tt.values, got, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("NextLink(%.60q) = %q, %v; want %q", tt.values, got, err, tt.want)
		}
	}
}

// FuzzNextLink: never panics; a target it returns is a non-empty string a
// URI could be, and written back as a Link it is found again.
func FuzzNextLink(f *testing.F) {
	for _, s := range []string{`</v2/a/tags/list?n=1&last=b>; rel="next"`, `</x>; rel=prev, </y>; rel=next`, `<a>;rel="\"`, `<`, `</x>; t="a\"b"; rel=next`} {
		f.Add(s, "")
		f.Add(s, `</z>; rel=next`)
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		got, err := NextLink([]string{a, b})
		if err != nil || got == "" {
			return
		}
		if strings.ContainsAny(got, "<> \t\r\n\x00") {
			t.Fatalf("NextLink(%q, %q) = %q", a, b, got)
		}
		again, err := NextLink([]string{`<` + got + `>; rel="next"`})
		if err != nil || again != got {
			t.Fatalf("round trip of %q: %q, %v", got, again, err)
		}
	})
}
