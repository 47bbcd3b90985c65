package upstream

import (
	"strings"
	"testing"
)

func TestNormalizeNS(t *testing.T) {
	label63 := strings.Repeat("a", 63)
	valid := map[string]string{
		"docker.io":                "docker.io",
		"Docker.IO":                "docker.io",
		"registry.shoal.test":      "registry.shoal.test",
		"registry.shoal.test:5000": "registry.shoal.test:5000",
		"localhost":                "localhost",
		"localhost:5000":           "localhost:5000",
		"a":                        "a",
		"a-b.c--d.e":               "a-b.c--d.e",
		"1a.com":                   "1a.com",
		"a.1b":                     "a.1b",
		"xn--bcher-kva.example":    "xn--bcher-kva.example",
		"gcr.io:1":                 "gcr.io:1",
		"gcr.io:65535":             "gcr.io:65535",
		"127.0.0.1":                "127.0.0.1",
		"127.0.0.1:5002":           "127.0.0.1:5002",
		"169.254.169.254":          "169.254.169.254",
		"[::1]":                    "[::1]",
		"[::1]:5000":               "[::1]:5000",
		"[0:0::1]:443":             "[::1]:443",
		"[2001:DB8::1]":            "[2001:db8::1]",
		"[::ffff:127.0.0.1]":       "[::ffff:127.0.0.1]",
		"0x7f000001":               "0x7f000001", // a name by the grammar; resolved and checked like any name
		label63 + ".io":            label63 + ".io",
	}
	for in, want := range valid {
		got, err := normalizeNS(in)
		if err != nil || got != want {
			t.Errorf("normalizeNS(%q) = %q, %v; want %q", in, got, err, want)
		}
	}

	invalid := []string{
		"", " ", "a b", "a\tb", "docker.io ", " docker.io", "docker.io\n", "a\x00b",
		"http://x", "https://docker.io", "x/y", "docker.io/library", "user@host", "a?b", "a#b", "a%2fb",
		"..", ".", "a..b", ".a", "a.", "docker.io.", "-a.com", "a-.com", "a_b.com", "ä.com", "*.io",
		"x:", "x:0", "x:00", "x:08080", "x:65536", "x:99999999", "x:abc", "x:-1", "x:+80", ":5000", "x:1:2",
		"[::1", "[::1]x", "[::1]:", "[::1]:0", "[]", "[1.2.3.4]", "[fe80::1%eth0]", "[not-ip]", "::1", "fe80::1",
		"127.1", "2130706433", "1.2.3.256", "01.2.3.4", "0x7f.1",
		strings.Repeat("a", 300), strings.Repeat("a", 64) + ".io",
		strings.Repeat(label63+".", 4) + "io", // 258 characters
	}
	for _, in := range invalid {
		if got, err := normalizeNS(in); err == nil {
			t.Errorf("normalizeNS(%q) = %q, want error", in, got)
		}
	}
}

func TestCheckNameAndTag(t *testing.T) {
	for _, n := range []string{"library/nginx", "a", "a/b/c", "my-org/my_app.v2", "0/1"} {
		if err := checkName(n); err != nil {
			t.Errorf("checkName(%q) = %v", n, err)
		}
	}
	for _, n := range []string{"", "/a", "a/", "a//b", "../etc", "a/../b", "a/./b", ".a", "a.", "A/b", "a b", "a%2f..", "a?x", "a#x", "a:b", "a@b", strings.Repeat("a", 256)} {
		if err := checkName(n); err == nil {
			t.Errorf("checkName(%q) = nil, want error", n)
		}
	}
	for _, tag := range []string{"latest", "v1.2.3", "_x", "A-b_c.d", strings.Repeat("a", 128)} {
		if err := checkTag(tag); err != nil {
			t.Errorf("checkTag(%q) = %v", tag, err)
		}
	}
	for _, tag := range []string{"", ".x", "-x", "a/b", "a:b", "a b", "a?b", strings.Repeat("a", 129)} {
		if err := checkTag(tag); err == nil {
			t.Errorf("checkTag(%q) = nil, want error", tag)
		}
	}
}

func FuzzNormalizeNS(f *testing.F) {
	for _, s := range []string{"docker.io", "[::1]:5000", "127.0.0.1", "a..b", "x:65536", "[fe80::1%25eth0]"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		key, err := normalizeNS(s)
		if err != nil {
			return
		}
		again, err := normalizeNS(key)
		if err != nil || again != key {
			t.Fatalf("normalizeNS(%q) = %q, not a fixed point (%q, %v)", s, key, again, err)
		}
		if strings.ContainsAny(key, "/@?#% \t\r\n\\") || key != strings.ToLower(key) {
			t.Fatalf("normalizeNS(%q) = %q: unsafe or not lower-case", s, key)
		}
	})
}
