package upstream

import (
	"strings"
	"testing"
)

func TestParseUpstream(t *testing.T) {
	valid := []struct{ in, ns, url string }{
		{"registry.shoal.test=http://127.0.0.1:5002", "registry.shoal.test", "http://127.0.0.1:5002"},
		{"Docker.IO=https://mirror.gcr.io/", "docker.io", "https://mirror.gcr.io"},
		{"ghcr.io=HTTPS://ghcr.io", "ghcr.io", "https://ghcr.io"},
		{"localhost:5000=http://localhost:5000/prefix/", "localhost:5000", "http://localhost:5000/prefix"},
		{"[::1]:5000=http://[::1]:5000", "[::1]:5000", "http://[::1]:5000"},
		{"10.0.0.5=http://10.0.0.5", "10.0.0.5", "http://10.0.0.5"},
	}
	for _, tc := range valid {
		ns, u, err := ParseUpstream(tc.in)
		if err != nil || ns != tc.ns || u != tc.url {
			t.Errorf("ParseUpstream(%q) = %q, %q, %v; want %q, %q", tc.in, ns, u, err, tc.ns, tc.url)
		}
	}
	invalid := []string{
		"", "noequals", "=http://x", "x=", "x y=http://h", "http://x=http://h", "x/y=http://h",
		"x=ftp://h", "x=file:///etc/passwd", "x=http://", "x=http:host", "x=/relative", "x=h:80",
		"x=http://user:pw@h", "x=http://user@h", "x=http://h?q=1", "x=http://h?", "x=http://h#f",
		"x=http://h:0", "x=http://h:99999", "x=http://h:abc", "x=http://a b",
	}
	for _, in := range invalid {
		if ns, u, err := ParseUpstream(in); err == nil {
			t.Errorf("ParseUpstream(%q) = %q, %q, want error", in, ns, u)
		}
	}
}

func TestNewValidates(t *testing.T) {
	bad := []map[string]string{
		{"a b": "http://h"},
		{"x": "ftp://h"},
		{"x": "http://"},
		{"x": "http://u:p@h"},
		{"A.io": "http://h1", "a.io": "http://h2"}, // same ns once normalized
	}
	for _, ups := range bad {
		if _, err := New(Config{Upstreams: ups}); err == nil {
			t.Errorf("New(%v) = nil error", ups)
		}
	}
}

func TestDockerHubDefault(t *testing.T) {
	c, err := New(Config{})
	if err != nil {
		t.Fatal(err)
	}
	tg, err := c.target("docker.io")
	if err != nil || tg.base.String() != dockerHubURL || !tg.guarded || tg.client != c.guardedHTTP {
		t.Fatalf("default docker.io = %+v, %v; want guarded %s", tg, err, dockerHubURL)
	}

	c, _ = New(Config{Upstreams: map[string]string{"docker.io": "http://127.0.0.1:5999"}})
	tg, err = c.target("Docker.io")
	if err != nil || tg.base.String() != "http://127.0.0.1:5999" || tg.guarded || tg.client != c.listedHTTP {
		t.Fatalf("overridden docker.io = %+v, %v", tg, err)
	}

	c, _ = New(Config{DisableDockerHubDefault: true})
	tg, err = c.target("docker.io")
	if err != nil || tg.base.String() != "https://docker.io" || !tg.guarded {
		t.Fatalf("docker.io without default = %+v, %v; want unlisted https://docker.io", tg, err)
	}
}

func FuzzParseUpstream(f *testing.F) {
	for _, s := range []string{"registry.shoal.test=http://127.0.0.1:5002", "docker.io=https://mirror.gcr.io/", "x=ftp://h", "=", "[::1]=http://[::1]:1/p"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ns, u, err := ParseUpstream(s)
		if err != nil {
			return
		}
		if !strings.HasPrefix(u, "http://") && !strings.HasPrefix(u, "https://") {
			t.Fatalf("ParseUpstream(%q) url %q: not http(s)", s, u)
		}
		ns2, u2, err := ParseUpstream(ns + "=" + u)
		if err != nil || ns2 != ns || u2 != u {
			t.Fatalf("ParseUpstream(%q) = %q, %q; reparse gave %q, %q, %v", s, ns, u, ns2, u2, err)
		}
		if _, err := New(Config{Upstreams: map[string]string{ns: u}}); err != nil {
			t.Fatalf("New rejects what ParseUpstream accepted (%q): %v", s, err)
		}
	})
}
