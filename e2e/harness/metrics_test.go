package harness

import (
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

const exposition = `# HELP shoal_served_bytes_total Bytes.
# TYPE shoal_served_bytes_total counter
shoal_served_bytes_total{source="local"} 10
shoal_served_bytes_total{source="peer"} 2.5e+06
shoal_requests_total{kind="blob",source="peer",code="200"} 3
shoal_requests_total{code="404",kind="blob",source="upstream"} 1
shoal_connected_peers 2
shoal_lookup_duration_seconds_bucket{le="+Inf"} 4 1700000000000
weird{v="a\"b\\c,d}"} 1
`

func TestScrapeMetric(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, exposition)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"shoal_served_bytes_total", map[string]string{"source": "peer"}, 2.5e6},
		{"shoal_served_bytes_total", nil, 2.5e6 + 10},
		{"shoal_requests_total", map[string]string{"kind": "blob"}, 4},
		{"shoal_connected_peers", nil, 2},
		{"shoal_lookup_duration_seconds_bucket", map[string]string{"le": "+Inf"}, 4},
		{"weird", map[string]string{"v": `a"b\c,d}`}, 1},
	} {
		got, err := ScrapeMetric(srv.URL, tc.name, tc.labels)
		if err != nil || got != tc.want {
			t.Errorf("%s%v = %v, %v; want %v", tc.name, tc.labels, got, err, tc.want)
		}
	}
	if _, err := ScrapeMetric(srv.URL, "shoal_served_bytes_total", map[string]string{"source": "upstream"}); !errors.Is(err, ErrNoSample) {
		t.Errorf("missing series: err = %v, want ErrNoSample", err)
	}
	if _, err := ParseMetrics(strings.NewReader("x{a=\"b\" 1\n")); err == nil {
		t.Error("bad line parsed")
	}
}

func TestLoopbackIP(t *testing.T) {
	if got := LoopbackIP(0); got != "127.0.0.1" {
		t.Errorf("LoopbackIP(0) = %s", got)
	}
	if got := LoopbackIP(4); got != "127.0.0.5" {
		t.Errorf("LoopbackIP(4) = %s", got)
	}
}

func TestHostsTOML(t *testing.T) {
	got := HostsTOML("http://127.0.0.1:5000", "http://127.0.0.2:5000", "http://127.0.0.1:5000")
	want := `server = "http://127.0.0.1:5000"

[host."http://127.0.0.2:5000"]
  capabilities = ["pull", "resolve"]

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]
`
	if got != want {
		t.Errorf("HostsTOML:\n%s\nwant:\n%s", got, want)
	}
}
