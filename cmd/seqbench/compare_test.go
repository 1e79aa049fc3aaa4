package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The fields every system's result must carry in --json output.
var resultFields = []string{"mode", "ops", "seq_per_sec", "p50_us", "p99_us", "p999_us", "errors", "concurrency", "keys", "duration_s"}

type compareJSON struct {
	Systems map[string]map[string]any `json:"systems"`
	Ratios  map[string]float64        `json:"ratios"`
	Skipped map[string]string         `json:"skipped"`
}

func readCompareJSON(t *testing.T, path string) compareJSON {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out compareJSON
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("--json output: %v\n%s", err, b)
	}
	return out
}

func TestCompareRunsEverySystemCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("runs seven systems for about 15s")
	}
	// Every temporary directory seqbench makes lands here, so the test can
	// check that none is left behind.
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp)
	jsonPath := filepath.Join(t.TempDir(), "compare.json")
	var stdout, stderr bytes.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := runCompare(ctx, []string{"--duration", "1s", "--warmup", "200ms", "--concurrency", "4", "--keys", "1000", "--json", jsonPath}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("compare: %v\nstdout:\n%s\nstderr:\n%s", err, &stdout, &stderr)
	}
	t.Logf("\n%s", &stdout)
	rep := readCompareJSON(t, jsonPath)

	optional := map[string]string{sysRedis: "redis-server", sysRedisPipelined: "redis-server", sysEtcd: "etcd"}
	for _, name := range allSystems {
		r, ran := rep.Systems[name]
		if !ran {
			bin, mayMiss := optional[name]
			_, lookErr := exec.LookPath(bin)
			if !mayMiss || lookErr == nil {
				t.Errorf("%s did not run: %q", name, rep.Skipped[name])
			} else if !strings.Contains(rep.Skipped[name], "not found in PATH") {
				t.Errorf("%s skipped for an unclear reason: %q", name, rep.Skipped[name])
			}
			continue
		}
		for _, f := range resultFields {
			if _, ok := r[f]; !ok {
				t.Errorf("%s: JSON lacks %q", name, f)
			}
		}
		if r["mode"] != name {
			t.Errorf("%s: mode %v", name, r["mode"])
		}
		ops, _ := r["ops"].(float64)
		seqs, _ := r["seqs"].(float64)
		depth, _ := r["seqs_per_op"].(float64)
		if ops <= 0 || r["errors"] != 0.0 {
			t.Errorf("%s: ops %v errors %v; want ops > 0 and no errors (samples: %v)", name, r["ops"], r["errors"], r["error_samples"])
		}
		if seqs != ops*depth {
			t.Errorf("%s: %v seqs for %v ops of %v", name, seqs, ops, depth)
		}
		if p50, p99 := r["p50_us"].(float64), r["p99_us"].(float64); p50 <= 0 || p99 < p50 {
			t.Errorf("%s: p50 %v µs, p99 %v µs", name, p50, p99)
		}
	}
	for _, d := range ratioDefs {
		_, num := rep.Systems[d.num]
		_, den := rep.Systems[d.den]
		x, ok := rep.Ratios[d.key]
		if ok != (num && den) || ok && x <= 0 {
			t.Errorf("ratio %s = %v (present %v); %s ran %v, %s ran %v", d.key, x, ok, d.num, num, d.den, den)
		}
	}
	for _, name := range allSystems {
		if !strings.Contains(stdout.String(), name) {
			t.Errorf("the table does not mention %s", name)
		}
	}
	// grpc-noop stands in for seqd's two AllocSvrs, routed the same way.
	if !strings.Contains(stdout.String(), "grpc-noop: 2 servers, like seqd's 2 AllocSvrs") {
		t.Errorf("the table does not say how grpc-noop spread its calls")
	}
	left, _ := os.ReadDir(tmp)
	for _, e := range left {
		t.Errorf("left behind in the temporary directory: %s", e.Name())
	}
}

func TestCompareSkipsMissingPeers(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // neither redis-server nor etcd
	jsonPath := filepath.Join(t.TempDir(), "compare.json")
	var stdout, stderr bytes.Buffer
	err := runCompare(context.Background(), []string{"--systems", "etcd,redis-pipelined,redis", "--duration", "1s", "--json", jsonPath}, &stdout, &stderr)
	// A missing peer is skipped; with nothing else to run, nothing was
	// measured, and that is a failure.
	if err == nil || !strings.Contains(err.Error(), "nothing was measured") {
		t.Fatalf("got %v, want nothing was measured", err)
	}
	rep := readCompareJSON(t, jsonPath)
	if len(rep.Systems) != 0 || len(rep.Ratios) != 0 {
		t.Errorf("systems %v ratios %v; want none", rep.Systems, rep.Ratios)
	}
	want := "redis: skipped (redis-server not found in PATH; apt-get install redis-server)"
	if n := strings.Count(stdout.String()+stderr.String(), want); n != 1 {
		t.Errorf("%q printed %d times, want once:\nstdout:\n%s\nstderr:\n%s", want, n, &stdout, &stderr)
	}
	if !strings.Contains(rep.Skipped[sysEtcd], "etcd not found in PATH") || len(rep.Skipped) != 3 {
		t.Errorf("skipped: %v", rep.Skipped)
	}
}

func TestParseSystemsKeepsTheRunOrder(t *testing.T) {
	got, err := parseSystems("etcd, grpc-noop,etcd,seqd-unary")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "grpc-noop,seqd-unary,etcd" {
		t.Fatalf("got %v", got)
	}
}
