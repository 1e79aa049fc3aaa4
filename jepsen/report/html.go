package report

import (
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/seqd/seqd/jepsen/checker"
	"github.com/seqd/seqd/jepsen/nemesis"
	"github.com/seqd/seqd/jepsen/workload"
)

// maxShown caps the anomalies listed per checker on the page (results.json
// keeps more, and the full count).
const maxShown = 30

// WriteHTML writes index.html into dir.
func (r *Results) WriteHTML(dir string, samples []workload.Sample) error {
	end := r.WorkloadEnd
	for _, s := range samples {
		end = max(end, s.End)
	}
	data := struct {
		*Results
		Throughput, Latency template.HTML
		Gaps                []gapRow
	}{
		Results:    r,
		Throughput: throughputSVG(samples, r.Faults, end),
		Latency:    latencySVG(samples, r.Faults, end),
	}
	for t, g := range r.WorstGap {
		data.Gaps = append(data.Gaps, gapRow{t, g})
	}
	sort.Slice(data.Gaps, func(i, j int) bool { return data.Gaps[i].Type < data.Gaps[j].Type })
	f, err := os.Create(filepath.Join(dir, "index.html"))
	if err != nil {
		return err
	}
	defer f.Close()
	if err := page.Execute(f, data); err != nil {
		return err
	}
	return f.Close()
}

type gapRow struct {
	Type string
	WorstGap
}

var page = template.Must(template.New("index").Funcs(template.FuncMap{
	"sec": func(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) },
	"secp": func(d *time.Duration) string {
		if d == nil {
			return "-"
		}
		return fmt.Sprintf("%.3f s", d.Seconds())
	},
	"f1":    func(f float64) string { return fmt.Sprintf("%.1f", f) },
	"f2":    func(f float64) string { return fmt.Sprintf("%.2f", f) },
	"join":  strings.Join,
	"first": func(fs []checker.Finding) []checker.Finding { return fs[:min(maxShown, len(fs))] },
	"more":  func(c checker.Result) int { return c.Count - min(maxShown, len(c.Findings)) },
	"base":  filepath.Base,
	"class": func(v checker.Verdict) string { return string(v) },
}).Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>seqjepsen {{.Workload}} seed {{.Seed}}: {{.Verdict}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
h1 span.pass,td.pass{color:#1a7f37} h1 span.fail,td.fail{color:#cf222e} h1 span.unknown,td.unknown{color:#9a6700}
table{border-collapse:collapse;margin:.5em 0 1.5em} td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top;font-size:14px}
th{background:#f3f3f3} code,pre{background:#f6f8fa;padding:2px 4px} pre{padding:8px;overflow-x:auto}
.anomaly{border-left:4px solid #cf222e;padding:4px 12px;margin:8px 0;background:#fff8f8}
.small{color:#666;font-size:13px}
</style></head><body>
<h1>seqjepsen: <span class="{{class .Verdict}}">{{.Verdict}}</span> <span class="small">(exit {{.ExitCode}})</span></h1>
<p>{{.Message}}</p>
<table>
<tr><th>workload</th><td>{{.Workload}}</td><th>backend</th><td>{{.Backend}}</td></tr>
<tr><th>nemeses</th><td>{{join .Nemeses ", "}}</td><th>seed</th><td>{{.Seed}}</td></tr>
<tr><th>planted bug</th><td>{{if .Bug}}<b>{{.Bug}}</b>{{else}}none{{end}}</td><th>scenario</th><td>{{.Scenario}}</td></tr>
<tr><th>time limit</th><td>{{sec .TimeLimit}} s (+{{sec .Quiet}} s quiet)</td><th>started</th><td>{{.Started.Format "2006-01-02 15:04:05 MST"}}, took {{sec .Duration}} s</td></tr>
<tr><th>first anomaly</th><td>{{secp .FirstAnomaly}}</td><th>AllocSvrs</th><td>{{.AllocSvrs}}{{if gt .StoreShards 1}}; {{.StoreShards}} store shards{{end}}</td></tr>
</table>
<p>Reproduce: <code>{{.CommandLine}}</code></p>
{{if .HarnessError}}<p class="anomaly"><b>Harness failure:</b> {{.HarnessError}}</p>{{end}}
{{if .Skipped}}<p><b>Faults this backend cannot inject (skipped):</b></p><ul>{{range .Skipped}}<li>{{.}}</li>{{end}}</ul>{{end}}
{{if .NotDrawn}}<p><b>Faults asked for but never drawn (a kind, or a target a kind was narrowed to), so not tested:</b> {{range .NotDrawn}}{{.}} {{end}}</p>{{end}}

<h2>Checkers</h2>
<table><tr><th>workload</th><th>checker</th><th>guarantee</th><th>verdict</th><th>anomalies</th><th>what it checks</th><th>time</th></tr>
{{range .Checkers}}<tr><td>{{.Workload}}</td><td>{{.Checker}}</td><td>{{.Guarantee}}</td><td class="{{class .Verdict}}"><b>{{.Verdict}}</b></td><td>{{.Count}}</td><td>{{.Summary}}</td><td>{{sec .Elapsed}} s</td></tr>
{{end}}</table>

{{range .Checkers}}{{if .Findings}}
<h3>{{.Checker}}: {{.Count}} anomalies</h3>
{{range first .Findings}}<div class="anomaly"><b>{{.Kind}}</b> at {{sec .At}} s: {{.Msg}}
<table><tr><th>client</th><th>op</th><th>key</th><th>value</th><th>start (s)</th><th>end (s)</th><th>error</th></tr>
{{range .Ops}}<tr><td>{{.Client}}</td><td>{{.Op}}</td><td>{{.Key}}</td><td>{{.Value}}</td><td>{{sec .Start}}</td><td>{{sec .End}}</td><td>{{.Err}}</td></tr>{{end}}
</table></div>{{end}}
{{if gt (more .) 0}}<p class="small">… and {{more .}} more ({{len .Findings}} in results.json).</p>{{end}}
{{end}}{{end}}

<h2>Throughput and latency</h2>
<p class="small">Shaded: faults (hover for details). Operations are bucketed per second by completion.</p>
{{.Throughput}}
{{.Latency}}
<table><tr><th></th><th>seconds</th><th>ok</th><th>failed</th><th>ok ops/s</th><th>p50 ms</th><th>p99 ms</th></tr>
<tr><th>overall</th><td>{{f1 .Perf.Overall.Seconds}}</td><td>{{.Perf.Overall.OK}}</td><td>{{.Perf.Overall.Failed}}</td><td>{{f1 .Perf.Overall.OpsPerS}}</td><td>{{f2 .Perf.Overall.P50ms}}</td><td>{{f2 .Perf.Overall.P99ms}}</td></tr>
<tr><th>during faults</th><td>{{f1 .Perf.Faults.Seconds}}</td><td>{{.Perf.Faults.OK}}</td><td>{{.Perf.Faults.Failed}}</td><td>{{f1 .Perf.Faults.OpsPerS}}</td><td>{{f2 .Perf.Faults.P50ms}}</td><td>{{f2 .Perf.Faults.P99ms}}</td></tr>
<tr><th>without faults</th><td>{{f1 .Perf.Calm.Seconds}}</td><td>{{.Perf.Calm.OK}}</td><td>{{.Perf.Calm.Failed}}</td><td>{{f1 .Perf.Calm.OpsPerS}}</td><td>{{f2 .Perf.Calm.P50ms}}</td><td>{{f2 .Perf.Calm.P99ms}}</td></tr>
</table>

<h2>Operations</h2>
<table>{{range $k, $v := .Ops}}<tr><th>{{$k}}</th><td>{{$v}}</td></tr>{{end}}</table>

<h2>Faults</h2>
<table><tr><th>#</th><th>start (s)</th><th>end (s)</th><th>kind</th><th>target</th><th>what</th><th>error</th></tr>
{{range $i, $f := .Faults}}<tr><td>{{$i}}</td><td>{{sec $f.Start}}</td><td>{{sec $f.End}}</td><td>{{$f.Kind}}</td><td>{{$f.Target}}</td><td>{{$f.Desc}}</td><td>{{$f.Err}}</td></tr>
{{end}}</table>
{{if .Gaps}}<h3>Longest unavailability per fault type</h3>
<p class="small">The longest gap between two successful operations on one hot key (hot keys are in use all the time) that overlaps a fault of that type.</p>
<table><tr><th>fault type</th><th>longest gap (s)</th><th>key</th><th>fault #</th></tr>
{{range .Gaps}}<tr><td>{{.Type}}</td><td>{{f2 .Seconds}}</td><td>{{.Key}}</td><td>{{.Fault}}</td></tr>{{end}}</table>{{end}}
{{if .Events}}<h3>Node events outside the harness's control</h3><ul>{{range .Events}}<li>{{sec .At}} s {{.Node}}: {{.Msg}}</li>{{end}}</ul>{{end}}

<h2>Files</h2>
<ul>
{{range .Artifacts}}<li><a href="{{.Path}}">{{.Name}}</a> <span class="small">{{.Note}}</span></li>{{end}}
<li><a href="results.json">results.json</a></li>
<li><a href="harness.log">harness.log</a> (the runner's own log)</li>
</ul>
<h3>Node logs</h3>
<ul>{{range .Logs}}<li><a href="{{.}}">{{base .}}</a></li>{{end}}</ul>
</body></html>
`))

const (
	plotW, plotH       = 1100, 260
	padL, padR         = 60, 20
	padT, padB         = 20, 40
	innerW             = plotW - padL - padR
	innerH             = plotH - padT - padB
	faultFill          = "#f6d5d5"
	backgroundFaultClr = "#d5e3f6"
)

type scale struct {
	end time.Duration
}

func (s scale) x(t time.Duration) float64 {
	if s.end <= 0 {
		return padL
	}
	return padL + float64(innerW)*t.Seconds()/s.end.Seconds()
}

func frame(b *strings.Builder, sc scale, faults []nemesis.Fault, title string) {
	fmt.Fprintf(b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">`, plotW, plotH)
	fmt.Fprintf(b, `<text x="%d" y="14" font-size="13" font-weight="bold">%s</text>`, padL, template.HTMLEscapeString(title))
	for _, f := range faults {
		x0, x1 := sc.x(f.Start), sc.x(f.End)
		clr := faultFill
		if strings.HasPrefix(f.Kind, "clock") {
			clr = backgroundFaultClr
		}
		fmt.Fprintf(b, `<rect x="%.1f" y="%d" width="%.1f" height="%d" fill="%s" opacity="0.7"><title>%s %.1f–%.1fs: %s</title></rect>`,
			x0, padT, math.Max(1, x1-x0), innerH, clr, template.HTMLEscapeString(f.Type()), f.Start.Seconds(), f.End.Seconds(), template.HTMLEscapeString(f.Desc))
	}
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`, padL, padT+innerH, padL+innerW, padT+innerH)
	fmt.Fprintf(b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#444"/>`, padL, padT, padL, padT+innerH)
	step := niceStep(sc.end.Seconds(), 12)
	for s := 0.0; s <= sc.end.Seconds(); s += step {
		x := sc.x(time.Duration(s * float64(time.Second)))
		fmt.Fprintf(b, `<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="#444"/><text x="%.1f" y="%d" text-anchor="middle">%gs</text>`,
			x, padT+innerH, x, padT+innerH+4, x, padT+innerH+16, s)
	}
}

func niceStep(span float64, ticks int) float64 {
	if span <= 0 {
		return 1
	}
	raw := span / float64(ticks)
	mag := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*mag >= raw {
			return m * mag
		}
	}
	return 10 * mag
}

func buckets(samples []workload.Sample, end time.Duration) (ok, failed []float64, lat [][]time.Duration) {
	n := int(end/time.Second) + 1
	ok, failed, lat = make([]float64, n), make([]float64, n), make([][]time.Duration, n)
	for _, s := range samples {
		i := int(s.End / time.Second)
		if i < 0 || i >= n {
			continue
		}
		if s.OK {
			ok[i]++
			lat[i] = append(lat[i], s.End-s.Start)
		} else {
			failed[i]++
		}
	}
	return ok, failed, lat
}

func polyline(b *strings.Builder, sc scale, ys []float64, y func(float64) float64, color string) {
	var pts []string
	for i, v := range ys {
		if math.IsNaN(v) {
			continue
		}
		t := time.Duration(i)*time.Second + time.Second/2
		pts = append(pts, fmt.Sprintf("%.1f,%.1f", sc.x(t), y(v)))
	}
	fmt.Fprintf(b, `<polyline fill="none" stroke="%s" stroke-width="1.5" points="%s"/>`, color, strings.Join(pts, " "))
}

func legend(b *strings.Builder, items ...string) {
	x := padL + innerW - 280
	for i := 0; i+1 < len(items); i += 2 {
		fmt.Fprintf(b, `<rect x="%d" y="6" width="12" height="3" fill="%s"/><text x="%d" y="12">%s</text>`, x, items[i+1], x+16, items[i])
		x += 95
	}
}

func throughputSVG(samples []workload.Sample, faults []nemesis.Fault, end time.Duration) template.HTML {
	sc := scale{end}
	ok, failed, _ := buckets(samples, end)
	top := 1.0
	for i := range ok {
		top = math.Max(top, math.Max(ok[i], failed[i]))
	}
	top *= 1.1
	y := func(v float64) float64 { return float64(padT+innerH) - float64(innerH)*v/top }
	var b strings.Builder
	frame(&b, sc, faults, "operations per second")
	step := niceStep(top, 5)
	for v := 0.0; v <= top; v += step {
		gridline(&b, v, y(v))
	}
	polyline(&b, sc, ok, y, "#1a7f37")
	polyline(&b, sc, failed, y, "#cf222e")
	legend(&b, "ok/s", "#1a7f37", "failed/s", "#cf222e")
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

// gridline draws a horizontal grid line at height yv labelled v.
func gridline(b *strings.Builder, v, yv float64) {
	fmt.Fprintf(b, `<text x="%d" y="%.1f" text-anchor="end">%g</text><line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>`, padL-4, yv+4, v, padL, yv, padL+innerW, yv)
}

func latencySVG(samples []workload.Sample, faults []nemesis.Fault, end time.Duration) template.HTML {
	sc := scale{end}
	_, _, lat := buckets(samples, end)
	p50, p99 := make([]float64, len(lat)), make([]float64, len(lat))
	for i, l := range lat {
		if len(l) == 0 {
			p50[i], p99[i] = math.NaN(), math.NaN()
			continue
		}
		p50[i], p99[i] = quantileMs(l, 0.5), quantileMs(l, 0.99)
	}
	// Log scale from 0.1 ms to 10 s.
	lo, hi := math.Log10(0.1), math.Log10(10_000)
	y := func(ms float64) float64 {
		v := math.Log10(math.Max(ms, 0.1))
		return float64(padT+innerH) - float64(innerH)*(math.Min(v, hi)-lo)/(hi-lo)
	}
	var b strings.Builder
	frame(&b, sc, faults, "latency of successful operations (ms, log scale)")
	for _, v := range []float64{0.1, 1, 10, 100, 1000, 10000} {
		gridline(&b, v, y(v))
	}
	polyline(&b, sc, p50, y, "#0969da")
	polyline(&b, sc, p99, y, "#8250df")
	legend(&b, "p50", "#0969da", "p99", "#8250df")
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}
