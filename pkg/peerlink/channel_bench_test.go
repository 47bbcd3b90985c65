package peerlink

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
)

// BenchmarkChannels moves one blob (1 GiB; SHOAL_BENCH_MIB overrides) from a
// server to a client in this process over each candidate peer channel, in
// interleaved rounds (SHOAL_BENCH_ROUNDS, default 3), and reports for each
// the median MB/s and the CPU seconds per GiB of the whole process (both
// ends). Every server answers with http.ServeContent from the same file, as
// Shoal serves a local blob:
//
//	plain     HTTP/1.1 on TCP: sendfile(2), what peers used before
//	tls       (b) HTTPS with mutual TLS from libp2p identities (this package)
//	p2p-tls   (a) HTTP over a libp2p stream on a host built like Shoal's:
//	          PSK (XSalsa20) + the default security (TLS 1.3 wins) + yamux
//	p2p-noise (a) the same with Noise as the security protocol
//
// Run: go test -run '^$' -bench Channels -benchtime 1x ./pkg/peerlink/
func BenchmarkChannels(b *testing.B) {
	size := int64(envInt("SHOAL_BENCH_MIB", 1024)) << 20
	rounds := envInt("SHOAL_BENCH_ROUNDS", 3)
	path := filepath.Join(b.TempDir(), "blob")
	writeRandom(b, path, size)
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	})
	type channel struct {
		name  string
		fetch func() (int64, error)
	}
	chans := []channel{
		{"plain", plainChannel(b, handler)},
		{"tls", tlsChannel(b, handler)},
		{"p2p-tls", p2pChannel(b, handler, nil)},
		{"p2p-noise", p2pChannel(b, handler, libp2p.Security(noise.ID, noise.New))},
	}
	mbps := map[string][]float64{}
	cpu := map[string][]float64{}
	b.ResetTimer()
	for range b.N {
		for r := range rounds {
			// Rotate who goes first, so drift hurts every channel alike.
			for i := range chans {
				c := chans[(i+r)%len(chans)]
				c0, t0 := cpuTime(), time.Now()
				n, err := c.fetch()
				wall, used := time.Since(t0).Seconds(), cpuTime()-c0
				if err != nil || n != size {
					b.Fatalf("%s: %d of %d bytes: %v", c.name, n, size, err)
				}
				mbps[c.name] = append(mbps[c.name], float64(size)/1e6/wall)
				cpu[c.name] = append(cpu[c.name], used/(float64(size)/(1<<30)))
			}
		}
	}
	b.StopTimer()
	for _, c := range chans {
		b.ReportMetric(median(mbps[c.name]), c.name+"-MB/s")
		b.ReportMetric(median(cpu[c.name]), c.name+"-cpu-s/GiB")
		b.Logf("%-9s MB/s %v  CPU s/GiB %v", c.name, rounded(mbps[c.name]), rounded(cpu[c.name]))
	}
}

func plainChannel(b *testing.B, h http.Handler) func() (int64, error) {
	ln := listen(b)
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	client := &http.Client{Transport: &http.Transport{DisableCompression: true}}
	return getter(client, "http://"+ln.Addr().String()+"/blob")
}

type allow map[peer.ID]bool

func (a allow) Member(_ context.Context, id peer.ID) bool { return a[id] }

func tlsChannel(b *testing.B, h http.Handler) func() (int64, error) {
	srvID, cliID := newIdentity(b), newIdentity(b)
	ln := listen(b)
	srv := NewServer(ServerConfig{Identity: srvID, Members: allow{cliID.ID(): true}, Handler: h})
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	c := NewClient(ClientConfig{Identity: cliID})
	return getter(&http.Client{Transport: c.RoundTripper(srvID.ID().String())}, "https://"+ln.Addr().String()+"/blob")
}

const httpProto = protocol.ID("/shoal/bench-http/1")

func p2pChannel(b *testing.B, h http.Handler, security libp2p.Option) func() (int64, error) {
	psk := make(pnet.PSK, 32)
	rand.Read(psk)
	srvHost, cliHost := p2pHost(b, psk, security), p2pHost(b, psk, security)
	ln := &streamListener{ch: make(chan network.Stream), done: make(chan struct{}), addr: srvHost.Addrs()[0]}
	srvHost.SetStreamHandler(httpProto, func(s network.Stream) {
		select {
		case ln.ch <- s:
		case <-ln.done:
			s.Reset()
		}
	})
	srv := &http.Server{Handler: h}
	go srv.Serve(ln)
	b.Cleanup(func() { srv.Close() })
	if err := cliHost.Connect(context.Background(), peer.AddrInfo{ID: srvHost.ID(), Addrs: srvHost.Addrs()}); err != nil {
		b.Fatal(err)
	}
	tr := &http.Transport{DisableCompression: true, DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		s, err := cliHost.NewStream(ctx, srvHost.ID(), httpProto)
		if err != nil {
			return nil, err
		}
		return streamConn{s}, nil
	}}
	return getter(&http.Client{Transport: tr}, "http://peer/blob")
}

func p2pHost(b *testing.B, psk pnet.PSK, security libp2p.Option) host.Host {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	opts := []libp2p.Option{libp2p.Identity(key), libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport), libp2p.DisableRelay(), libp2p.DisableMetrics(), libp2p.PrivateNetwork(psk)}
	if security != nil {
		opts = append(opts, security)
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { h.Close() })
	return h
}

// streamListener hands libp2p streams to an http.Server as connections.
type streamListener struct {
	ch   chan network.Stream
	done chan struct{}
	addr fmt.Stringer
}

func (l *streamListener) Accept() (net.Conn, error) {
	select {
	case s := <-l.ch:
		return streamConn{s}, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *streamListener) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return nil
}

func (l *streamListener) Addr() net.Addr { return fakeAddr(l.addr.String()) }

type streamConn struct{ network.Stream }

func (c streamConn) LocalAddr() net.Addr  { return fakeAddr(c.Conn().LocalMultiaddr().String()) }
func (c streamConn) RemoteAddr() net.Addr { return fakeAddr(c.Conn().RemoteMultiaddr().String()) }

type fakeAddr string

func (a fakeAddr) Network() string { return "libp2p" }
func (a fakeAddr) String() string  { return string(a) }

func getter(c *http.Client, url string) func() (int64, error) {
	return func() (int64, error) {
		resp, err := c.Get(url)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return 0, fmt.Errorf("status %s", resp.Status)
		}
		return io.Copy(io.Discard, resp.Body)
	}
}

func listen(b *testing.B) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	return ln
}

func newIdentity(tb testing.TB) *Identity {
	key, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := NewIdentity(key)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

func writeRandom(b *testing.B, path string, size int64) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := io.CopyN(f, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
}

// cpuTime is the process's user plus system CPU seconds so far.
func cpuTime() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	return s[len(s)/2]
}

func rounded(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = float64(int(x*100)) / 100
	}
	return out
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
