package throttle

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// The limit is shared: two connections together get the rate, not twice it.
// Checked loosely (within a factor), as this runs on noisy machines.
func TestSharedRate(t *testing.T) {
	src, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	const size = 2 << 20
	go func() {
		for {
			c, err := src.Accept()
			if err != nil {
				return
			}
			go func() { c.Write(make([]byte, size)); c.Close() }()
		}
	}()
	const rate = 8 << 20
	p, err := Start("127.0.0.1:0", src.Addr().String(), rate)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	start := time.Now()
	var wg sync.WaitGroup
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", p.Addr())
			if err != nil {
				t.Error(err)
				return
			}
			defer c.Close()
			if n, _ := io.Copy(io.Discard, c); n != size {
				t.Errorf("got %d bytes", n)
			}
		}()
	}
	wg.Wait()
	took := time.Since(start)
	want := time.Duration(float64(2*size) / rate * float64(time.Second)) // 0.5s
	if took < want*7/10 {
		t.Fatalf("4 MiB at a shared 8 MiB/s took %v; the limit is not shared (want about %v)", took, want)
	}
	if p.BytesDown() != 2*size {
		t.Fatalf("counted %d bytes", p.BytesDown())
	}
}
