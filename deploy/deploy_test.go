// Package deploy_test checks the Prometheus alerting rules
// (prometheus/seqd-alerts.yml) and the Grafana dashboard
// (grafana/seqd.json) against what seqd serves: every metric, label and
// label value they name exists on a running cluster, promtool accepts the rules and
// passes their tests, and a real Prometheus scraping a cluster evaluates
// every rule and every panel's query without error, with no alert firing
// in its first seconds on a healthy cluster. The last two need promtool and prometheus
// (Debian's prometheus package; .ci/run installs it) and skip without
// them.
package deploy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"

	"github.com/seqd/seqd/internal/localcluster"
	"github.com/seqd/seqd/internal/loopback"
	"github.com/seqd/seqd/internal/testwait"
)

const (
	rulesFile     = "prometheus/seqd-alerts.yml"
	rulesTests    = "prometheus/seqd-alerts_test.yml"
	demoConfig    = "prometheus/demo.yml"
	dashboardFile = "grafana/seqd.json"
)

// startCluster starts a local cluster with one store shard.
func startCluster(t *testing.T) *localcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{ClusterID: "alerts-test", Fast: true, Shards: 1, GatewayAddr: "-"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.WaitServing(ctx); err != nil {
		t.Fatal(err)
	}
	return c
}

// selector matches a metric name and its label matchers in PromQL.
var (
	selector = regexp.MustCompile(`\b(seqd_[a-z0-9_]+)(\{[^}]*\})?`)
	matcher  = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"`)
)

func TestRulesAndDashboardNameMetricsSeqdServes(t *testing.T) {
	rules, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	panels := strings.Join(dashboardQueries(t), "\n")
	c := startCluster(t)
	mfs, err := c.Gatherer().Gather()
	if err != nil {
		t.Fatal(err)
	}
	families := map[string]*dto.MetricFamily{}
	for _, mf := range mfs {
		families[mf.GetName()] = mf
	}
	// Every store metric carries its shard: the rules group by it.
	for name, mf := range families {
		if _, ok := labelValues(mf)["shard"]; strings.HasPrefix(name, "seqd_store_") && !ok {
			t.Errorf("%s has no shard label", name)
		}
	}
	checkNames(t, rulesFile, string(rules), families, 15)
	checkNames(t, dashboardFile, panels, families, 30)
}

// checkNames checks that every seqd metric the PromQL in text (from file)
// names is one of families, as are the labels it selects on and the values
// it asks for exactly (every one the rules and panels name exists from a
// node's start), and that it names at least want of them.
func checkNames(t *testing.T, file, text string, families map[string]*dto.MetricFamily, want int) {
	t.Helper()
	var named int
	for _, m := range selector.FindAllStringSubmatch(text, -1) {
		name, bucket := m[1], false
		if families[name] == nil {
			// A histogram's series: name_bucket, name_count, name_sum.
			for _, suffix := range []string{"_bucket", "_count", "_sum"} {
				base := strings.TrimSuffix(name, suffix)
				if mf := families[base]; base != name && mf != nil && mf.GetType() == dto.MetricType_HISTOGRAM {
					name, bucket = base, suffix == "_bucket"
				}
			}
		}
		if families[name] == nil {
			t.Errorf("%s names %s, which no node of a running cluster serves", file, m[1])
			continue
		}
		named++
		labels := labelValues(families[name])
		for _, lm := range matcher.FindAllStringSubmatch(m[2], -1) {
			values, ok := labels[lm[1]]
			switch {
			case lm[1] == "le" && bucket:
			case !ok:
				t.Errorf("%s selects %s on label %q; its labels are %v", file, m[1], lm[1], slices.Sorted(maps.Keys(labels)))
			case lm[2] == "=" && !slices.Contains(values, lm[3]):
				t.Errorf("%s selects %s on %s=%q; its values are %v", file, m[1], lm[1], lm[3], values)
			}
		}
	}
	if named < want {
		t.Fatalf("found %d metric names in %s, want at least %d; the pattern no longer matches it", named, file, want)
	}
}

// dashboardQueries returns the PromQL of every panel of the dashboard.
func dashboardQueries(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	var d struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardFile, err)
	}
	var qs []string
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			if tg.Expr == "" {
				t.Errorf("%s: panel %q has a target without a query", dashboardFile, p.Title)
			}
			qs = append(qs, tg.Expr)
		}
	}
	return qs
}

// labelValues maps each label of mf's series to the values it takes.
func labelValues(mf *dto.MetricFamily) map[string][]string {
	labels := map[string][]string{}
	for _, m := range mf.GetMetric() {
		for _, l := range m.GetLabel() {
			if !slices.Contains(labels[l.GetName()], l.GetValue()) {
				labels[l.GetName()] = append(labels[l.GetName()], l.GetValue())
			}
		}
	}
	return labels
}

func TestAlertRulesPassPromtool(t *testing.T) {
	promtool, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool is not installed (Debian: apt-get install prometheus); .ci/run installs it")
	}
	for _, args := range [][]string{{"check", "rules", rulesFile}, {"test", "rules", rulesTests}} {
		out, err := exec.Command(promtool, args...).CombinedOutput()
		if err != nil {
			t.Errorf("promtool %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
}

// TestRulesAndDashboardEvaluateOnARealCluster runs Prometheus, with the
// configuration shipped for seqd demo, against a local cluster's metrics
// (every node's, labelled by node, as seqd demo serves them), and checks that each
// rule evaluates without error and that none fires in the first seconds
// (those without a for clause could), that the shard's no-leader alert
// goes pending once two of its three replicas die, and that every panel's
// query runs.
func TestRulesAndDashboardEvaluateOnARealCluster(t *testing.T) {
	bin, err := exec.LookPath("prometheus")
	if err != nil {
		t.Skip("prometheus is not installed (Debian: apt-get install prometheus); .ci/run installs it")
	}
	if testing.Short() {
		t.Skip("skipping a run of Prometheus in -short mode")
	}
	c := startCluster(t)
	host := loopback.Host()
	ln, err := net.Listen("tcp", net.JoinHostPort(host, "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: promhttp.HandlerFor(c.Gatherer(), promhttp.HandlerOpts{}), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })

	dir := t.TempDir()
	rules, err := filepath.Abs(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	// The shipped configuration for seqd demo, pointed at this cluster,
	// scraping and evaluating every second.
	demo, err := os.ReadFile(demoConfig)
	if err != nil {
		t.Fatal(err)
	}
	swaps := []string{`"127.0.0.1:7480"`, strconv.Quote(ln.Addr().String()), "interval: 5s", "interval: 1s", "- seqd-alerts.yml", "- " + strconv.Quote(rules)}
	for i := 0; i < len(swaps); i += 2 {
		if !strings.Contains(string(demo), swaps[i]) {
			t.Fatalf("%s no longer holds %s", demoConfig, swaps[i])
		}
	}
	config := strings.NewReplacer(swaps...).Replace(string(demo))
	if err := os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	web, err := loopback.FreeAddr(host)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--config.file", filepath.Join(dir, "prometheus.yml"), "--storage.tsdb.path", filepath.Join(dir, "data"),
		"--web.listen-address", web)
	logf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd.Stdout, cmd.Stderr = logf, logf
	dieWithTest(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			log, _ := os.ReadFile(filepath.Join(dir, "prometheus.log"))
			t.Logf("prometheus log:\n%s", log)
		}
	})

	// Wait for the first scrape, then until every rule has been evaluated
	// 3 s after it (the rate and increase rules need two samples).
	testwait.For(t, 60*time.Second, "Prometheus to scrape the cluster", func() bool {
		var up queryResult
		return getJSON("http://"+web+"/api/v1/query?query=up%3D%3D1", &up) == nil && len(up.Data.Result) == 1
	})
	scraped := time.Now()
	var groups []ruleGroup
	testwait.For(t, 30*time.Second, "Prometheus to evaluate every rule", func() bool {
		var r rulesResult
		if getJSON("http://"+web+"/api/v1/rules", &r) != nil || len(r.Data.Groups) == 0 {
			return false
		}
		groups = r.Data.Groups
		for _, g := range groups {
			for _, rule := range g.Rules {
				if rule.LastEvaluation.Before(scraped.Add(3 * time.Second)) {
					return false
				}
			}
		}
		return true
	})
	var n int
	for _, g := range groups {
		for _, rule := range g.Rules {
			n++
			if rule.Health != "ok" || rule.LastError != "" {
				t.Errorf("rule %s (group %s): health %q, error %q", rule.Name, g.Name, rule.Health, rule.LastError)
			}
			// A rule without a for clause fires at once; the others could
			// only be pending, which a start-up election can make some of
			// them (a shard's leader, its format poll) for a moment.
			for _, a := range rule.Alerts {
				if a.State == "firing" {
					t.Errorf("alert %s fires on a healthy cluster: %v", rule.Name, a.Labels)
				} else {
					t.Logf("alert %s is %s on a healthy cluster: %v", rule.Name, a.State, a.Labels)
				}
			}
		}
	}
	if n != 20 {
		t.Errorf("Prometheus loaded %d rules, want the 20 of %s", n, rulesFile)
	}
	// Two of the shard's three replicas die: its alert goes pending (it
	// fires after its 30 s).
	c.KillStore(0, 0)
	c.KillStore(0, 1)
	testwait.For(t, 30*time.Second, "SeqdStoreShardNoLeader to go pending once two of three store replicas died", func() bool {
		return alerting(web, "SeqdStoreShardNoLeader", "shard", "s1")
	})
	// The node stops answering scrapes: its alert goes pending (it fires
	// after a minute).
	srv.Close()
	testwait.For(t, 30*time.Second, "SeqdNodeDown to go pending once the node's metrics stopped answering", func() bool {
		return alerting(web, "SeqdNodeDown", "instance", ln.Addr().String())
	})
	// The panels' queries, with Grafana's variables as a dashboard showing
	// every shard would set them.
	vars := strings.NewReplacer("$__rate_interval", "1m", "$shard", ".*")
	for _, q := range dashboardQueries(t) {
		var r struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		}
		err := getJSON("http://"+web+"/api/v1/query?query="+url.QueryEscape(vars.Replace(q)), &r)
		if err != nil || r.Status != "success" {
			t.Errorf("panel query %s: %v %s %s", q, err, r.Status, r.Error)
		}
	}
}

// alerting reports whether Prometheus at web holds exactly one alert of
// the rule name, pending or firing, and it has label key=value.
func alerting(web, name, key, value string) bool {
	var r rulesResult
	if getJSON("http://"+web+"/api/v1/rules", &r) != nil {
		return false
	}
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			if rule.Name == name && len(rule.Alerts) == 1 && rule.Alerts[0].Labels[key] == value {
				return true
			}
		}
	}
	return false
}

type ruleGroup struct {
	Name  string `json:"name"`
	Rules []struct {
		Name           string    `json:"name"`
		Health         string    `json:"health"`
		LastError      string    `json:"lastError"`
		LastEvaluation time.Time `json:"lastEvaluation"`
		Alerts         []struct {
			State  string            `json:"state"`
			Labels map[string]string `json:"labels"`
		} `json:"alerts"`
	} `json:"rules"`
}

type rulesResult struct {
	Data struct {
		Groups []ruleGroup `json:"groups"`
	} `json:"data"`
}

type queryResult struct {
	Data struct {
		Result []json.RawMessage `json:"result"`
	} `json:"data"`
}

// client gives up on a Prometheus that does not answer.
var client = &http.Client{Timeout: 10 * time.Second}

func getJSON(addr string, v any) error {
	resp, err := client.Get(addr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s: %s: %s", resp.Request.URL.Path, resp.Status, body)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
