package imagebuild

import (
	"archive/tar"
	"bytes"
	"io"
	"testing"
	"time"
)

func TestBuildIsReproducibleAndComplete(t *testing.T) {
	spec := Spec{
		Files: []File{
			{Path: "/bin/app", Mode: 0o755, Data: []byte("#!")},
			{Path: "/tmp", Dir: true, Mode: 0o1777},
		},
		Entrypoint: []string{"/bin/app"},
	}
	a, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	b, err := Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest()
	db, _ := b.Digest()
	if da != db {
		t.Fatalf("two builds of one spec differ: %s %s", da, db)
	}
	cf, err := a.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if cf.OS != "linux" || cf.Architecture != "amd64" || len(cf.Config.Entrypoint) != 1 {
		t.Fatalf("config = %+v", cf)
	}
	layers, _ := a.Layers()
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	want := []struct {
		name string
		mode int64
	}{{"bin/", 0o755}, {"bin/app", 0o755}, {"tmp/", 0o1777}}
	tr := tar.NewReader(rc)
	for i := 0; ; i++ {
		h, err := tr.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Fatalf("%d entries, want %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if i >= len(want) || h.Name != want[i].name || h.Mode != want[i].mode {
			t.Fatalf("entry %d = %s %o, want %+v", i, h.Name, h.Mode, want)
		}
	}
}

func TestTarFilesRefuses(t *testing.T) {
	for name, files := range map[string][]File{
		"root":      {{Path: "/"}},
		"duplicate": {{Path: "/a", Data: []byte("1")}, {Path: "a", Data: []byte("2")}},
	} {
		if _, err := tarFiles(files, time.Time{}); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestMeasure(t *testing.T) {
	img, err := Build(Spec{Files: []File{{Path: "/f", Data: bytes.Repeat([]byte{1}, 4096)}}})
	if err != nil {
		t.Fatal(err)
	}
	s, err := Measure(img)
	if err != nil {
		t.Fatal(err)
	}
	if s.Unpacked < 4096 || s.Compressed <= 0 || s.Compressed > s.Unpacked {
		t.Fatalf("size = %+v", s)
	}
}
