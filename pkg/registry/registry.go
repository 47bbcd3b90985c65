// Package registry is Shoal's pull-only OCI distribution API: the handler that
// the node's containerd talks to. It parses requests strictly, asks the
// resolution chain (pkg/mirror) for manifests and blobs and the upstream for
// tag lists and referrers, and writes spec-exact responses. One file per
// resource; errors are data (errors.go).
package registry

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/pkg/metrics"
	"github.com/shoalproject/shoal/pkg/mirror"
	"github.com/shoalproject/shoal/pkg/oci"
	"github.com/shoalproject/shoal/pkg/peer"
	"github.com/shoalproject/shoal/pkg/upstream"
)

// Mirror is the resolution chain, as the handler needs it.
type Mirror interface {
	Manifest(ctx context.Context, req mirror.Request) (*mirror.Manifest, error)
	Blob(ctx context.Context, req mirror.Request) (*mirror.Blob, error)
	BlobSize(ctx context.Context, req mirror.Request) (int64, mirror.Source, error)
}

// Lists is the upstream as tag listings and referrers need it
// (pkg/upstream): a listing is not content-addressed, so it never comes from
// a peer, and the upstream is asked first.
type Lists interface {
	Tags(ctx context.Context, ns, name string, query url.Values) (*upstream.Page, error)
	Referrers(ctx context.Context, ns, name string, subject digest.Digest, query url.Values) (*upstream.Page, error)
}

// LocalTags is the node's own image store (pkg/store), which lists tags only
// while the upstream cannot be reached.
type LocalTags interface {
	Tags(ctx context.Context, registry, name string) ([]string, error)
}

// Config configures the handler.
type Config struct {
	Mirror    Mirror
	Lists     Lists            // optional: without it tag lists and referrers are 404
	LocalTags LocalTags        // optional: without it no tag list outlives its upstream
	Metrics   *metrics.Metrics // optional
	OnRequest func(Record)     // optional: sees every manifest and blob request once answered
	Logger    *slog.Logger
}

// Record describes one answered manifest or blob request.
type Record struct {
	Time     time.Time     `json:"time"`
	Kind     string        `json:"kind"`
	Name     string        `json:"name"`
	Ref      string        `json:"ref"`
	NS       string        `json:"ns,omitempty"`
	Status   int           `json:"status"`
	Bytes    int64         `json:"bytes"`
	Source   string        `json:"source,omitempty"`
	Duration time.Duration `json:"duration"`
	FromPeer bool          `json:"from_peer,omitempty"`
}

// Registry is the HTTP handler.
type Registry struct {
	mirror    Mirror
	lists     Lists
	localTags LocalTags
	metrics   *metrics.Metrics
	onRequest func(Record)
	failures  *failureLog
	log       *slog.Logger
}

// New returns the handler.
func New(cfg Config) *Registry {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Registry{mirror: cfg.Mirror, lists: cfg.Lists, localTags: cfg.LocalTags, metrics: cfg.Metrics,
		onRequest: cfg.OnRequest, failures: newFailureLog(failureLogEvery, time.Now), log: cfg.Logger}
}

// outcome is what a resource handler reports for logs and metrics.
type outcome struct {
	source mirror.Source
	err    *apiError
	cause  error // the error behind err (or behind an abort), for the log level and failures
	// abort: the body is already going out and must not end cleanly, so the
	// connection is cut (see serveBlob). blame is where its bytes came from;
	// source stays empty, as for any answer that is not the content.
	abort bool
	blame mirror.Source
}

func (g *Registry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w}
	w = rec
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")

	var req mirror.Request
	var out outcome
	defer func() { g.finish(rec, r, req, out, start) }()

	req, err := g.parse(r)
	if err != nil {
		out = failed(err, req.Kind)
		writeError(w, r, out.err)
		return
	}
	if req.NS != "" {
		w.Header().Set("OCI-Namespace", req.NS)
	}
	switch req.Kind {
	case oci.KindBase:
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method != http.MethodHead {
			io.WriteString(w, "{}")
		}
	case oci.KindManifest:
		out = g.serveManifest(w, r, req)
	case oci.KindBlob:
		out = g.serveBlob(w, r, req)
	case oci.KindTags:
		out = g.serveTags(w, r, req)
	case oci.KindReferrers:
		out = g.serveReferrers(w, r, req)
	default:
		out = outcome{err: &apiError{http.StatusNotFound, "UNSUPPORTED", "not served by this mirror: " + string(req.Kind)}}
	}
	if out.abort {
		panic(http.ErrAbortHandler) // finish, deferred, still sees out
	}
	if out.err != nil {
		writeError(w, r, out.err)
	}
}

// parse validates everything the client sent before anything is looked up.
func (g *Registry) parse(r *http.Request) (mirror.Request, error) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return mirror.Request{}, &apiError{http.StatusMethodNotAllowed, "UNSUPPORTED", "this mirror is pull-only: GET and HEAD"}
	}
	// Escaped bytes have no place in names, tags or digests; refusing them
	// means the path we check is the path we serve.
	if r.URL.RawPath != "" {
		return mirror.Request{}, &apiError{http.StatusBadRequest, "NAME_INVALID", "escaped characters in path"}
	}
	parsed, err := oci.ParsePath(r.URL.Path)
	if err != nil {
		return mirror.Request{}, err
	}
	req := mirror.Request{Request: parsed, HeadOnly: r.Method == http.MethodHead, FromPeer: r.Header.Get(peer.Header) != ""}
	if req.Accept, err = acceptValues(r.Header); err != nil {
		return req, err
	}
	q := r.URL.Query()
	if vals, ok := q["ns"]; ok {
		if len(vals) != 1 {
			return req, &apiError{http.StatusBadRequest, "NAME_INVALID", "ns given more than once"}
		}
		if req.NS, err = oci.ParseNamespace(vals[0]); err != nil {
			return req, err
		}
		if len(req.NS)+1+len(req.Name) > oci.MaxNameLength {
			return req, &apiError{http.StatusBadRequest, "NAME_INVALID", "registry and name longer than 255 characters"}
		}
	}
	return req, nil
}

// acceptValues returns the client's Accept values, which go upstream with
// manifest requests; bounded, since they are forwarded.
func acceptValues(h http.Header) ([]string, error) {
	vals := h.Values("Accept")
	n := 0
	for _, v := range vals {
		n += len(v)
	}
	if len(vals) > maxAcceptValues || n > maxAcceptBytes {
		return nil, errAcceptTooLong
	}
	return vals, nil
}

// finish logs one line per request and counts it.
func (g *Registry) finish(rec *recorder, r *http.Request, req mirror.Request, out outcome, start time.Time) {
	status := rec.status
	if status == 0 {
		status = http.StatusOK
	}
	elapsed := time.Since(start)
	level := slog.LevelDebug
	// Hostile or broken clients, and ns values the upstream policy refuses
	// (an SSRF attempt looks like that), deserve a visible line.
	if status == http.StatusBadRequest || status == http.StatusMethodNotAllowed || errors.Is(out.cause, upstream.ErrRefused) {
		level = slog.LevelWarn
	}
	attrs := []slog.Attr{
		slog.String("method", r.Method), slog.String("path", r.URL.Path),
		slog.String("ns", r.URL.Query().Get("ns")), slog.Int("status", status),
		slog.Int64("bytes", rec.bytes), slog.Duration("duration", elapsed),
	}
	if req.FromPeer {
		attrs = append(attrs, slog.Bool("from_peer", true))
	}
	if out.source != "" {
		attrs = append(attrs, slog.String("source", string(out.source)))
	}
	if out.err != nil {
		attrs = append(attrs, slog.String("error", out.err.Message))
	}
	g.log.LogAttrs(r.Context(), level, "request", attrs...)
	g.noteFailures(r, out, status)

	if req.Kind != oci.KindManifest && req.Kind != oci.KindBlob {
		return
	}
	if g.onRequest != nil {
		g.onRequest(Record{Time: start, Kind: string(req.Kind), Name: req.Name, Ref: req.Reference(), NS: req.NS,
			Status: status, Bytes: rec.bytes, Source: string(out.source), Duration: elapsed, FromPeer: req.FromPeer})
	}
	if g.metrics == nil {
		return
	}
	source := string(out.source)
	switch {
	case source == "":
		source = "none"
	case req.FromPeer:
		g.metrics.PeerServedBytes.Add(float64(rec.bytes))
	case rec.bytes > 0:
		g.metrics.ServedBytes.WithLabelValues(source).Add(float64(rec.bytes))
	}
	g.metrics.Requests.WithLabelValues(string(req.Kind), source, strconv.Itoa(status)).Inc()
}

// noteFailures counts and (rate-limited) logs what failed behind a request
// that was not a plain miss. A client that went away explains its own
// failures, so those are left out.
func (g *Registry) noteFailures(r *http.Request, out outcome, status int) {
	if out.cause == nil || r.Context().Err() != nil {
		return
	}
	for _, kind := range failureKinds(out.cause, out.blame) {
		if g.metrics != nil {
			g.metrics.Errors.WithLabelValues(kind).Inc()
		}
		ok, suppressed := g.failures.allow(kind)
		if !ok {
			continue
		}
		what := "answered 404, so containerd pulls without Shoal"
		if out.abort {
			what = "response aborted"
		}
		g.log.Warn("request failed, and not for a miss: "+what, "kind", kind, "suppressed", suppressed,
			"method", r.Method, "path", r.URL.Path, "ns", r.URL.Query().Get("ns"), "status", status, "err", out.cause)
	}
}

// recorder notes status and body bytes. It forwards ReadFrom so that a copy
// from an *os.File still reaches the connection's sendfile.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rec *recorder) WriteHeader(code int) {
	if rec.status == 0 {
		rec.status = code
	}
	rec.ResponseWriter.WriteHeader(code)
}

func (rec *recorder) Write(b []byte) (int, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	n, err := rec.ResponseWriter.Write(b)
	rec.bytes += int64(n)
	return n, err
}

func (rec *recorder) ReadFrom(src io.Reader) (int64, error) {
	if rec.status == 0 {
		rec.status = http.StatusOK
	}
	var n int64
	var err error
	if rf, ok := rec.ResponseWriter.(io.ReaderFrom); ok {
		n, err = rf.ReadFrom(src)
	} else {
		n, err = io.Copy(struct{ io.Writer }{rec.ResponseWriter}, src)
	}
	rec.bytes += n
	return n, err
}

// Unwrap lets http.ResponseController reach the connection.
func (rec *recorder) Unwrap() http.ResponseWriter { return rec.ResponseWriter }
