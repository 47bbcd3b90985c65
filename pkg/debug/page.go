package debug

import (
	"fmt"
	"html/template"
	"net/http"
	"time"
)

// pageData is what the /debug/ template renders.
type pageData struct {
	Now    time.Time
	Peers  Peers
	Images []Image
	Pulls  []pull
	Served map[string]float64
	Pprof  bool // link /debug/pprof/ only where it is served
}

type pull struct {
	Time, Kind, What, Source, Bytes, Duration, Rate string
	Status                                          int
	FromPeer                                        bool
}

func (cfg Config) page(w http.ResponseWriter, r *http.Request) {
	d := pageData{Now: time.Now(), Peers: cfg.peers(), Pprof: cfg.Pprof}
	if cfg.Images != nil {
		d.Images = cfg.Images()
	}
	if cfg.Served != nil {
		d.Served = cfg.Served()
	}
	if cfg.History != nil {
		for _, rec := range cfg.History.Recent() {
			what := rec.Name + ":" + rec.Ref
			if len(rec.Ref) > 19 && rec.Ref[:7] == "sha256:" {
				what = rec.Name + "@" + rec.Ref[:19] + "…"
			}
			d.Pulls = append(d.Pulls, pull{
				Time: rec.Time.Format("15:04:05.000"), Kind: rec.Kind, What: what, Source: rec.Source,
				Bytes: size(float64(rec.Bytes)), Duration: rec.Duration.Round(time.Microsecond).String(),
				Rate: rate(rec.Bytes, rec.Duration), Status: rec.Status, FromPeer: rec.FromPeer,
			})
		}
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.Execute(w, d); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
	}
}

func size(b float64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%.1f KiB", b/(1<<10))
	}
	return fmt.Sprintf("%.0f B", b)
}

func rate(b int64, d time.Duration) string {
	if b < 1<<20 || d <= 0 {
		return ""
	}
	return size(float64(b)/d.Seconds()) + "/s"
}

var pageTmpl = template.Must(template.New("debug").Funcs(template.FuncMap{
	"size": func(b any) string {
		switch v := b.(type) {
		case int64:
			return size(float64(v))
		case float64:
			return size(v)
		}
		return fmt.Sprint(b)
	},
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Shoal {{.Peers.Self.ID}}</title>
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.6em}
table{border-collapse:collapse}td,th{padding:.2em .8em;border-bottom:1px solid #ddd;text-align:left;font-variant-numeric:tabular-nums}
th{background:#f4f4f4}code{font-size:12px}.muted{color:#888}
</style></head><body>
<h1>Shoal node <code>{{.Peers.Self.ID}}</code></h1>
<p class="muted">{{range .Peers.Self.Addrs}}<code>{{.}}</code> {{end}} · peer API <code>{{.Peers.Self.Mirror}}</code> · {{.Now.Format "2006-01-02 15:04:05 MST"}}</p>
{{with .Served}}<p>Served to this node's containerd: local <b>{{size .local}}</b>, peers <b>{{size .peer}}</b>, upstream <b>{{size .upstream}}</b>.</p>{{end}}

<h2>Peers ({{len .Peers.Peers}})</h2>
{{if .Peers.Peers}}<table><tr><th>peer</th><th>connected</th><th>peer API</th><th>addresses</th></tr>
{{range .Peers.Peers}}<tr><td><code>{{.ID}}</code></td><td>{{if .Connected}}yes{{else}}no{{end}}</td><td><code>{{.Mirror}}</code></td><td>{{range .Addrs}}<code>{{.}}</code> {{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">No peers yet. A single node works on its own.</p>{{end}}

<h2>Advertised images ({{len .Images}})</h2>
{{if .Images}}<table><tr><th>image</th><th>digest</th><th>size</th><th>keys</th></tr>
{{range .Images}}<tr><td>{{.Name}}</td><td><code>{{.Digest}}</code></td><td>{{size .Size}}</td><td>{{.Keys}}</td></tr>
{{end}}</table>{{else}}<p class="muted">Nothing advertised.</p>{{end}}

<h2>Recent requests</h2>
{{if .Pulls}}<table><tr><th>time</th><th>kind</th><th>what</th><th>status</th><th>source</th><th>bytes</th><th>duration</th><th>throughput</th><th>for</th></tr>
{{range .Pulls}}<tr><td>{{.Time}}</td><td>{{.Kind}}</td><td><code>{{.What}}</code></td><td>{{.Status}}</td><td>{{.Source}}</td><td>{{.Bytes}}</td><td>{{.Duration}}</td><td>{{.Rate}}</td><td>{{if .FromPeer}}a peer{{else}}containerd{{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">No requests yet.</p>{{end}}
<p class="muted">JSON: <a href="/debug/peers">/debug/peers</a> · <a href="/metrics">/metrics</a>{{if .Pprof}} · <a href="/debug/pprof/">pprof</a>{{end}}</p>
</body></html>
`))
