// Package metrics holds Shoal's Prometheus metrics (names fixed by SPEC.md) in
// a registry of its own, so that tests and several nodes in one process never
// share state.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are the SPEC metrics.
type Metrics struct {
	Registry        *prometheus.Registry
	ServedBytes     *prometheus.CounterVec // source
	PeerServedBytes prometheus.Counter
	Requests        *prometheus.CounterVec // kind, source, code
	AdvertisedKeys  prometheus.Gauge
	ConnectedPeers  prometheus.Gauge
	ProviderRecords prometheus.Gauge
	LookupDuration  prometheus.Histogram
	PeerTags        prometheus.Counter     // tags served as a peer advertises them
	FetchedBytes    *prometheus.CounterVec // source: bytes this node received for transfers
	Refused         *prometheus.CounterVec // reason: requests answered 404 because a limit was reached
	Errors          *prometheus.CounterVec // kind: one of the Error* kinds
}

// The kinds of shoal_errors_total: what failed, when a request fails for a
// reason that is not a plain miss.
const (
	ErrorSpool      = "spool"      // the spool in --data-dir could not be created, written or read
	ErrorContainerd = "containerd" // containerd or its content directory did not answer
	ErrorUpstream   = "upstream"   // the upstream was unreachable, answered 5xx or 429, or sent bad bytes
	ErrorPeer       = "peer"       // peers were unreachable, answered errors, or sent bad bytes
)

// New registers every metric, with the Go runtime and process collectors.
func New() *Metrics {
	m := &Metrics{
		Registry: prometheus.NewRegistry(),
		ServedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_served_bytes_total",
			Help: "Body bytes sent to the local containerd, by where they came from.",
		}, []string{"source"}),
		PeerServedBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_peer_served_bytes_total",
			Help: "Body bytes this node sent to other nodes.",
		}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_requests_total",
			Help: "Mirror requests by kind (manifest, blob), source and HTTP status code.",
		}, []string{"kind", "source", "code"}),
		AdvertisedKeys: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_advertised_keys",
			Help: "Keys this node currently provides in the DHT.",
		}),
		ConnectedPeers: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_connected_peers",
			Help: "Peers connected right now.",
		}),
		ProviderRecords: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_provider_records",
			Help: "DHT provider records this node stores, its own and other nodes' (sampled every 15 s).",
		}),
		LookupDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_lookup_duration_seconds",
			Help:    "DHT provider look-ups.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. 4 s
		}),
		PeerTags: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_peer_tags_total",
			Help: "Tags answered as a peer advertises them, because the upstream could not be reached.",
		}),
		Refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_refused_total",
			Help: "Requests answered 404 because a limit was reached, by reason: transfers, spool, relays.",
		}, []string{"reason"}),
		FetchedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_fetched_bytes_total",
			Help: "Bytes this node received for blob transfers, by source (upstream, peer): a herd's upstream cost, per node.",
		}, []string{"source"}),
		Errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_errors_total",
			Help: "Failures that are not plain misses, by kind (spool, containerd, upstream, peer).",
		}, []string{"kind"}),
	}
	m.Registry.MustRegister(m.ServedBytes, m.PeerServedBytes, m.Requests, m.AdvertisedKeys,
		m.ConnectedPeers, m.ProviderRecords, m.LookupDuration, m.PeerTags, m.FetchedBytes, m.Refused, m.Errors,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// Present from the start, so dashboards and rate() see zeros, not gaps.
	for _, s := range []string{"local", "peer", "upstream"} {
		m.ServedBytes.WithLabelValues(s)
	}
	for _, s := range []string{"peer", "upstream"} {
		m.FetchedBytes.WithLabelValues(s)
	}
	for _, r := range []string{"transfers", "spool", "relays"} {
		m.Refused.WithLabelValues(r)
	}
	for _, k := range []string{ErrorSpool, ErrorContainerd, ErrorUpstream, ErrorPeer} {
		m.Errors.WithLabelValues(k)
	}
	return m
}

// WatchTransfers registers the transfer gauges, shoal_transfers and
// shoal_spool_bytes, read from stats at every scrape.
func (m *Metrics) WatchTransfers(stats func() (transfers int, spoolBytes int64)) {
	m.Registry.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_transfers", Help: "Transfers in flight (or kept for peers a moment)."},
			func() float64 { n, _ := stats(); return float64(n) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_spool_bytes", Help: "Bytes the transfers in flight hold on disk."},
			func() float64 { _, b := stats(); return float64(b) }),
	)
}

// Handler serves the text exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{Registry: m.Registry})
}
