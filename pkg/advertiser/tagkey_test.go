package advertiser

import "testing"

func TestTagKeyFromImageName(t *testing.T) {
	const d = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
	tests := []struct {
		name string
		want string // "" means no tag key
	}{
		{"registry.shoal.test/e2e/app:v1", "registry.shoal.test/e2e/app:v1"},
		{"docker.io/library/nginx:latest", "docker.io/library/nginx:latest"},
		{"docker.io/library/nginx:1.27.0-alpine", "docker.io/library/nginx:1.27.0-alpine"},
		{"registry.k8s.io/pause:3.10", "registry.k8s.io/pause:3.10"},
		{"ghcr.io/a/b/c/d:V_1.0-rc", "ghcr.io/a/b/c/d:V_1.0-rc"},
		// Ports: the first ':' is the port, the last one the tag.
		{"127.0.0.1:5000/e2e/app:v1", "127.0.0.1:5000/e2e/app:v1"},
		{"localhost:5000/app:v1", "localhost:5000/app:v1"},
		{"localhost/app:v1", "localhost/app:v1"},
		{"[::1]:5000/app:v1", "[::1]:5000/app:v1"},
		{"[0:0::1]:5000/app:v1", "[::1]:5000/app:v1"}, // canonical IPv6, as ?ns= is
		{"Registry.Example.COM/app:v1", "registry.example.com/app:v1"},
		// No tag key.
		{"registry.shoal.test/e2e/app", ""},         // untagged
		{"registry.shoal.test/e2e/app@" + d, ""},    // digest-only
		{"registry.shoal.test/e2e/app:v1@" + d, ""}, // tag pinned by digest
		{d, ""},                                // CRI image ID
		{"library/nginx:latest", ""},           // no registry host
		{"nginx:latest", ""},                   // no registry host
		{"127.0.0.1:5000/app", ""},             // port but no tag
		{"127.0.0.1:05000/app:v1", ""},         // port spelling
		{"registry.shoal.test/E2E/app:v1", ""}, // upper-case repo
		{"registry.shoal.test/app:-v1", ""},    // bad tag
		{"registry.shoal.test/app:", ""},       // empty tag
		{"registry.shoal.test/:v1", ""},        // empty repo
		{"registry.shoal.test//app:v1", ""},    // empty component
		{"", ""},
	}
	for _, tt := range tests {
		got, ok := TagKeyFromImageName(tt.name)
		if ok != (tt.want != "") || got != tt.want {
			t.Errorf("TagKeyFromImageName(%q) = %q, %v; want %q", tt.name, got, ok, tt.want)
		}
	}
}

func TestTagKey(t *testing.T) {
	if got := TagKey("docker.io", "library/nginx", "latest"); got != "docker.io/library/nginx:latest" {
		t.Fatal(got)
	}
}

// FuzzTagKeyFromImageName: never panics, and an accepted name gives a
// canonical key (parsing the key again yields it unchanged).
func FuzzTagKeyFromImageName(f *testing.F) {
	for _, s := range []string{"docker.io/library/nginx:latest", "[::1]:5000/a:b", "localhost/a:b", "sha256:abc", "a/b@sha256:x", "A.B/c:d"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		key, ok := TagKeyFromImageName(name)
		if !ok {
			return
		}
		again, ok := TagKeyFromImageName(key)
		if !ok || again != key {
			t.Fatalf("%q -> %q -> %q, %v", name, key, again, ok)
		}
	})
}
