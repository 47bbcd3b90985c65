package harness

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// LoopbackIP returns the address of node n: "127.0.0.<n+1>", so node 0 is
// 127.0.0.1 and several nodes can share default ports. Linux routes the whole
// 127.0.0.0/8 to lo, so no setup is needed.
func LoopbackIP(n int) string {
	if n < 0 || n > 253 {
		panic(fmt.Sprintf("harness: LoopbackIP(%d) out of range", n))
	}
	return "127.0.0." + strconv.Itoa(n+1)
}

// FreePort returns a TCP port that is free on ip right now. It panics when
// it cannot listen on ip at all, which means the machine is broken.
func FreePort(ip string) int {
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		panic(fmt.Sprintf("harness: FreePort(%s): %v", ip, err))
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// FreeAddr returns "ip:port" with a free port.
func FreeAddr(ip string) string {
	return net.JoinHostPort(ip, strconv.Itoa(FreePort(ip)))
}

// WaitHTTP polls GET url every 100ms until it answers wantStatus or ctx ends;
// the error then says what the last attempt got.
func WaitHTTP(ctx context.Context, url string, wantStatus int) error {
	client := &http.Client{Timeout: 2 * time.Second}
	var last error
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			return err
		}
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
			resp.Body.Close()
			if resp.StatusCode == wantStatus {
				return nil
			}
			err = fmt.Errorf("status %d", resp.StatusCode)
		}
		last = err
		select {
		case <-ctx.Done():
			return fmt.Errorf("harness: waiting for %s to answer %d: %w (last: %v)", url, wantStatus, ctx.Err(), last)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
