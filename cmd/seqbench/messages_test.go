package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/seqd/seqd/internal/localcluster"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// The fields the issue asks of every send result in --json output.
var sendFields = []string{"ops", "msgs_per_sec", "p50_us", "p99_us", "p999_us", "errors", "mode", "via", "concurrency", "users", "body_bytes", "duration_s"}

// startStoreCluster starts one in-process cluster with a message store for
// the tests that can share it (each uses its own users).
func startStoreCluster(t *testing.T) *localcluster.Cluster {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	c, err := localcluster.Start(ctx, localcluster.Options{ClusterID: "seqbench-test", Shards: storeShards, StoreReplicas: storeReplicas})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// checkStages checks a send result's stage report: every stage timed,
// with a bound (or past the last bucket) for its p99 and its slowest, and
// every send taken from the queue at least once.
func checkStages(t *testing.T, out map[string]any) {
	t.Helper()
	rep, ok := out["stages"].(map[string]any)
	if !ok {
		t.Fatalf("no stages in %v", out)
	}
	if n, _ := rep["ops_per_entry"].(float64); n < 1 {
		t.Errorf("ops_per_entry %v", rep["ops_per_entry"])
	}
	stages, _ := rep["stages"].(map[string]any)
	sends, _ := out["ops"].(float64)
	for _, name := range stageOrder {
		st, ok := stages[name].(map[string]any)
		if !ok {
			t.Errorf("stage %s missing from %v", name, stages)
			continue
		}
		count, _ := st["count"].(float64)
		mean, _ := st["mean_us"].(float64)
		last, _ := st["last_bucket_us"].(float64)
		bounded := func(k string) bool {
			v, ok := st[k].(float64)
			return ok && v > 0 && v <= last || st[k] == nil && last > 0
		}
		if count <= 0 || mean <= 0 || !bounded("p99_le_us") || !bounded("max_le_us") || name == "queued" && count < sends {
			t.Errorf("stage %s: %v (for %v sends)", name, st, sends)
		}
	}
}

// runJSON runs cmd with args plus --json and returns the decoded output.
func runJSON(t *testing.T, cmd func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) error, args ...string) (map[string]any, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "out.json")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := cmd(ctx, append(args, "--json", path), &stdout, &stderr); err != nil {
		t.Fatalf("%v: %v\nstdout:\n%s\nstderr:\n%s", args, err, &stdout, &stderr)
	}
	t.Logf("%v\n%s", args, &stdout)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("--json output: %v\n%s", err, b)
	}
	return out, stdout.String()
}

func sendCmd(ctx context.Context, args []string, o, e *bytes.Buffer) error {
	return runSend(ctx, args, o, e)
}
func syncCmd(ctx context.Context, args []string, o, e *bytes.Buffer) error {
	return runSyncBench(ctx, args, o, e)
}
func compareStoreCmd(ctx context.Context, args []string, o, e *bytes.Buffer) error {
	return runCompareStore(ctx, args, o, e)
}
func diskCmd(ctx context.Context, args []string, o, e *bytes.Buffer) error {
	return runDisk(ctx, args, o, e)
}

// checkSendResult checks the documented fields and a clean run.
func checkSendResult(t *testing.T, name string, r map[string]any) {
	t.Helper()
	for _, f := range sendFields {
		if _, ok := r[f]; !ok {
			t.Errorf("%s: JSON lacks %q", name, f)
		}
	}
	ops, _ := r["ops"].(float64)
	rate, _ := r["msgs_per_sec"].(float64)
	if ops <= 0 || rate <= 0 || r["errors"] != 0.0 {
		t.Errorf("%s: ops %v msgs/s %v errors %v; want ops > 0 and no errors (samples: %v)", name, r["ops"], r["msgs_per_sec"], r["errors"], r["error_samples"])
	}
	p50, _ := r["p50_us"].(float64)
	p99, _ := r["p99_us"].(float64)
	p999, _ := r["p999_us"].(float64)
	if p50 <= 0 || p99 < p50 || p999 < p99 {
		t.Errorf("%s: p50 %v p99 %v p999 %v µs", name, p50, p99, p999)
	}
}

func TestMessageCommandsOnOneCluster(t *testing.T) {
	c := startStoreCluster(t)
	addr := c.GatewayAddr()
	short := []string{"--addr", addr, "--warmup", "200ms"}
	metrics := httptest.NewServer(promhttp.HandlerFor(c.Gatherer(), promhttp.HandlerOpts{}))
	defer metrics.Close()

	t.Run("send 1:1 and at half rate", func(t *testing.T) {
		out, stdout := runJSON(t, sendCmd, append(short, "--duration", "1s", "--concurrency", "8", "--users", "50", "--first-user", "1000", "--half-rate",
			"--metrics", metrics.URL+"/metrics")...)
		checkSendResult(t, "send", out)
		checkStages(t, out)
		if !strings.Contains(stdout, "leader ") || !strings.Contains(stdout, "commit ") {
			t.Errorf("no stage line in\n%s", stdout)
		}
		// With --addr the CPU covers the load generator only, and says so.
		for _, r := range []map[string]any{out, out["half_rate"].(map[string]any)} {
			if cpu, _ := r["cpu_us_per_msg"].(float64); runtime.GOOS != "windows" && (cpu <= 0 || !strings.Contains(fmt.Sprint(r["cpu_scope"]), "load generator only")) {
				t.Errorf("cpu_us_per_msg %v, cpu_scope %q", r["cpu_us_per_msg"], r["cpu_scope"])
			}
		}
		if runtime.GOOS != "windows" && !strings.Contains(stdout, "µs per acknowledged message") {
			t.Errorf("no cpu line in\n%s", stdout)
		}
		if out["mode"] != "1:1" || out["via"] != "router.Client" || out["inbox_copies_per_msg"] != 2.0 {
			t.Errorf("mode %v via %v copies %v", out["mode"], out["via"], out["inbox_copies_per_msg"])
		}
		half, ok := out["half_rate"].(map[string]any)
		if !ok {
			t.Fatalf("no half_rate in %v", out)
		}
		checkSendResult(t, "half_rate", half)
		checkStages(t, half)
		full, target := out["msgs_per_sec"].(float64), half["rate_target"].(float64)
		if target < full/2*0.99 || target > full/2*1.01 {
			t.Errorf("half rate paced at %v for %v msgs/s unpaced", target, full)
		}
		if got := half["msgs_per_sec"].(float64); got > target*1.2 {
			t.Errorf("half-rate run went %v msgs/s, above its pace %v", got, target)
		}
	})

	t.Run("send through the gateway", func(t *testing.T) {
		out, _ := runJSON(t, sendCmd, append(short, "--gateway", "--duration", "500ms", "--concurrency", "4", "--users", "20", "--first-user", "2000")...)
		checkSendResult(t, "send --gateway", out)
		if via, _ := out["via"].(string); !strings.HasPrefix(via, "gateway ") {
			t.Errorf("via %q", via)
		}
	})

	// In both group modes every message sent in the window must reach every
	// subscribed member exactly once, and be timed.
	checkGroup := func(t *testing.T, out map[string]any, fanout string, groups, subs float64) {
		t.Helper()
		checkSendResult(t, "group send", out)
		g, ok := out["group"].(map[string]any)
		if !ok {
			t.Fatalf("no group in %v", out)
		}
		if g["fanout"] != fanout || g["groups"] != groups || g["subscribers_per_group"] != subs {
			t.Errorf("group %v; want %s fanout, %v groups, %v subscribers each", g, fanout, groups, subs)
		}
		d := g["delivery"].(map[string]any)
		msgs, _ := d["messages"].(float64)
		if msgs <= 0 || d["complete"] != msgs || d["incomplete"] != 0.0 || d["duplicates"] != 0.0 {
			t.Errorf("delivery %v; want every message complete, none twice", d)
		}
		if msgs != out["ops"] {
			t.Errorf("delivery timed %v messages, the run acknowledged %v", msgs, out["ops"])
		}
		if p50, p99 := d["p50_us"].(float64), d["p99_us"].(float64); p50 <= 0 || p99 < p50 {
			t.Errorf("delivery p50 %v p99 %v", p50, p99)
		}
	}
	t.Run("send to write-fanout groups", func(t *testing.T) {
		out, _ := runJSON(t, sendCmd, append(short, "--duration", "1s", "--concurrency", "2", "--users", "30", "--first-user", "3000",
			"--group-size", "10", "--senders-per-group", "2")...)
		checkGroup(t, out, "write", 3, 8)
		if out["mode"] != "group-write-fanout" || out["inbox_copies_per_msg"] != 10.0 {
			t.Errorf("mode %v copies %v", out["mode"], out["inbox_copies_per_msg"])
		}
	})
	t.Run("send to a read-fanout group", func(t *testing.T) {
		out, stdout := runJSON(t, sendCmd, append(short, "--duration", "1s", "--concurrency", "2", "--users", "40", "--first-user", "4000",
			"--group-size", "40", "--read-fanout", "--subscribers", "5")...)
		checkGroup(t, out, "read", 1, 5)
		if !strings.Contains(stdout, "SyncGroup") || !strings.Contains(stdout, "31 other members are not subscribed") {
			t.Errorf("the summary does not say what was measured:\n%s", stdout)
		}
	})

	t.Run("sync and subscribe", func(t *testing.T) {
		out, _ := runJSON(t, syncCmd, append(short, "--duration", "500ms", "--concurrency", "4", "--users", "20", "--first-user", "5000",
			"--events", "1000", "--load-concurrency", "16", "--page", "50")...)
		if out["loaded_events"] != 1000.0 || out["users"] != 20.0 {
			t.Errorf("loaded %v events into %v users", out["loaded_events"], out["users"])
		}
		for _, path := range []string{"sync", "subscribe"} {
			r, ok := out[path].(map[string]any)
			if !ok {
				t.Fatalf("no %s in %v", path, out)
			}
			if eps, _ := r["events_per_sec"].(float64); eps <= 0 || r["errors"] != 0.0 {
				t.Errorf("%s: %v", path, r)
			}
			// Inboxes hold 50 events on average: Sync pages of 50 are
			// mostly full, a stream catches up with a whole inbox.
			perCall := r["events"].(float64) / r["calls"].(float64)
			if path == "sync" && (perCall < 10 || perCall > 50) || path == "subscribe" && (perCall < 20 || perCall > 120) {
				t.Errorf("%s: %.1f events per call", path, perCall)
			}
		}
	})

	t.Run("compare-store against the same cluster", func(t *testing.T) {
		tmp := t.TempDir()
		t.Setenv("TMPDIR", tmp)
		out, stdout := runJSON(t, compareStoreCmd, append(short, "--duration", "1s", "--concurrency", "4", "--users", "100")...)
		systems, _ := out["systems"].(map[string]any)
		ratios, _ := out["ratios"].(map[string]any)
		skipped, _ := out["skipped"].(map[string]any)
		checkSendResult(t, sysSeqdSend, systems[sysSeqdSend].(map[string]any))
		_, lookErr := exec.LookPath("redis-server")
		for _, name := range []string{sysRedisInbox, sysRedisInbox1} {
			r, ran := systems[name].(map[string]any)
			switch {
			case ran:
				checkSendResult(t, name, r)
			case lookErr == nil:
				t.Errorf("%s did not run: %v", name, skipped[name])
			case !strings.Contains(fmt.Sprint(skipped[name]), "not found in PATH"):
				t.Errorf("%s skipped for an unclear reason: %v", name, skipped[name])
			}
		}
		x, ok := ratios["seqd_send_vs_redis"].(float64)
		if _, redisRan := systems[sysRedisInbox]; ok != redisRan || ok && x <= 0 {
			t.Errorf("ratios %v with redis ran %v", ratios, redisRan)
		}
		if lookErr == nil && !strings.Contains(stdout, "appendfsync always") {
			t.Errorf("the table does not say Redis fsyncs always:\n%s", stdout)
		}
		left, _ := os.ReadDir(tmp)
		for _, e := range left {
			t.Errorf("left behind in the temporary directory: %s", e.Name())
		}
	})
}

func TestDiskReportsBytesPerMessage(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	const msgs = 1000
	out, _ := runJSON(t, diskCmd, "--messages", fmt.Sprint(msgs), "--concurrency", "16", "--users", "100")
	phases, _ := out["phases"].([]any)
	var names []string
	for _, p := range phases {
		ph := p.(map[string]any)
		names = append(names, ph["phase"].(string))
		if reps := ph["replicas"].([]any); len(reps) != storeReplicas {
			t.Errorf("%s: %d replicas measured", ph["phase"], len(reps))
		}
		total, badger, raft := ph["bytes_per_msg"].(float64), ph["badger_bytes_per_msg"].(float64), ph["raft_bytes_per_msg"].(float64)
		// Two 100-byte copies of random letters cannot take less than
		// about 150 bytes even compressed; every phase keeps them.
		if badger < 150 || raft <= 0 || total < badger+raft-1 || total > badger+raft+1 {
			t.Errorf("%s: %v B/msg = badger %v + raft %v?", ph["phase"], total, badger, raft)
		}
	}
	if got := strings.Join(names, ","); got != "live,snapshotted,closed,flattened,rewritten" {
		t.Errorf("phases %s", got)
	}
	left, _ := os.ReadDir(tmp)
	for _, e := range left {
		t.Errorf("left behind in the temporary directory: %s", e.Name())
	}
}

func TestNoopRoutingFollowsTheSlotMap(t *testing.T) {
	// Sections of 100 keys, 4 slots owned alternately by two AllocSvrs.
	tbl := &seqdv1.RoutingTable{SectionSize: 100, NumSlots: 4, Slots: []*seqdv1.SlotAssignment{
		{Owner: "alloc2"}, {Owner: "alloc1"}, {Owner: "alloc2"}, {Owner: "alloc1"},
	}}
	rt, err := newNoopRouting(tbl)
	if err != nil {
		t.Fatal(err)
	}
	if rt.servers != 2 {
		t.Fatalf("%d servers for two AllocSvrs", rt.servers)
	}
	// Servers are numbered by sorted owner: alloc1 is 0.
	for key, want := range map[uint64]int{1: 1, 99: 1, 100: 0, 250: 1, 399: 0, 400: 1, 1_000_150: 0} {
		if got := rt.server(key); got != want {
			t.Errorf("key %d -> server %d, want %d", key, got, want)
		}
	}
	// Keys 1..400: alloc2 gets 1..99, 200..299 and 400; alloc1 the rest.
	if s := rt.spread(400); s[0] != 200.0/400 || s[1] != 200.0/400 {
		t.Errorf("spread %v", s)
	}
	// Every key in the first section: one server takes everything.
	if s := rt.spread(99); s[0] != 0 || s[1] != 1 {
		t.Errorf("spread %v", s)
	}
	if _, err := newNoopRouting(&seqdv1.RoutingTable{SectionSize: 100, NumSlots: 2, Slots: []*seqdv1.SlotAssignment{{Owner: "a"}, {}}}); err == nil {
		t.Error("a slot without owner: want an error")
	}
}

func TestPairsAndBodies(t *testing.T) {
	p := population{first: 10, n: 5}
	seen := map[uint64][2]uint64{}
	r := newRand(0)
	for range 1000 {
		a, b := p.pair(r)
		if a == b || a >= p.n || b >= p.n {
			t.Fatalf("pair %d, %d", a, b)
		}
		id := p.convID(a, b)
		if id == 0 || id != p.convID(b, a) {
			t.Fatalf("conversation %d for %d,%d", id, a, b)
		}
		if prev, ok := seen[id]; ok && prev != [2]uint64{min(a, b), max(a, b)} {
			t.Fatalf("conversation %d shared by %v and %d,%d", id, prev, a, b)
		}
		seen[id] = [2]uint64{min(a, b), max(a, b)}
	}
	if len(seen) != 10 {
		t.Errorf("%d conversations among 5 users, want 10", len(seen))
	}
	now := time.Now()
	b := makeBody(r, 100, now)
	if at, ok := sentAt(b); len(b) != 100 || !ok || at != now.UnixNano() {
		t.Errorf("body %q: sent at %v, %v", b, at, ok)
	}
	if _, ok := sentAt(makeBody(r, 5, now)); ok {
		t.Error("a 5-byte body has no room for the send time")
	}
}

func TestMessageFlagErrorsSayWhatToDo(t *testing.T) {
	cases := []struct {
		cmd  func(context.Context, []string, *bytes.Buffer, *bytes.Buffer) error
		args []string
		want string
	}{
		{sendCmd, []string{"--users", "1"}, "at least 2 users"},
		{sendCmd, []string{"--half-rate", "--rate", "100"}, "exclusive"},
		{sendCmd, []string{"--group-size", "1"}, "at least 2 members"},
		{sendCmd, []string{"--group-size", "500", "--users", "100"}, "fewer than --group-size"},
		{sendCmd, []string{"--group-size", "10", "--users", "10", "--senders-per-group", "10"}, "--senders-per-group"},
		{sendCmd, []string{"--group-size", "10", "--users", "10", "--subscribers", "9"}, "only 6 members"},
		{sendCmd, []string{"--group-size", "10", "--users", "10", "--body-bytes", "4"}, "first 8 bytes"},
		{sendCmd, []string{"--group-size", "10", "--users", "10", "--half-rate"}, "--half-rate is for the 1:1 load"},
		{sendCmd, []string{"--first-user", "0"}, "user ids start at 1"},
		{syncCmd, []string{"--page", "2000"}, "1..1000"},
		{syncCmd, []string{"--paths", "history"}, "--paths"},
		{compareStoreCmd, []string{"--systems", "mysql"}, `unknown system "mysql"`},
		{compareStoreCmd, []string{"--concurrency", "0"}, "at least 1"},
		{diskCmd, []string{"--messages", "0"}, "at least one"},
		{diskCmd, []string{"extra"}, "unexpected argument"},
	}
	for _, c := range cases {
		var out, errOut bytes.Buffer
		err := c.cmd(context.Background(), c.args, &out, &errOut)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: got %v, want an error mentioning %q", c.args, err, c.want)
		}
	}
}

// With --retention the in-process store removes what is older than the
// period while the load runs, and the report says how much.
func TestSendWithRetentionReportsWhatWasRemoved(t *testing.T) {
	out, stdout := runJSON(t, sendCmd, "--retention", "1s", "--duration", "3s", "--warmup", "200ms", "--concurrency", "4", "--users", "20")
	checkSendResult(t, "send with retention", out)
	r, _ := out["retention"].(map[string]any)
	if r == nil || r["period_s"] != 1.0 || r["passes"].(float64) < 1 || r["expired_events"].(float64) < 1 {
		t.Fatalf("retention report %v; want a 1 s period, passes and removed events", out["retention"])
	}
	if !strings.Contains(stdout, "retention    1s: ") || !strings.Contains(stdout, "group timeline entries") {
		t.Fatalf("stdout has no retention line:\n%s", stdout)
	}
	// Sends to a read-fanout group: its timeline entries go too.
	out, _ = runJSON(t, sendCmd, "--retention", "1s", "--duration", "3s", "--warmup", "200ms", "--concurrency", "2", "--users", "20",
		"--group-size", "20", "--read-fanout", "--subscribers", "2")
	r, _ = out["retention"].(map[string]any)
	if r == nil || r["expired_timeline_entries"].(float64) < 1 {
		t.Fatalf("retention report of a read-fanout group load %v; want removed timeline entries", out["retention"])
	}
}
