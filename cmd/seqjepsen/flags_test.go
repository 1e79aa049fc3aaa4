package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/seqd/seqd/jepsen/report"
)

// brokenTree is a directory that passes for a seqd source tree but does
// not build, so a bad input that slipped through validation would stop at
// the build, never at a cluster.
func brokenTree(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "go.mod"), "module github.com/seqd/seqd\n")
	writeFile(t, filepath.Join(dir, "cmd", "seqd", "main.go"), "package main\n\nfunc main() { not go }\n")
	return dir
}

func writeFile(t *testing.T, path, body string) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// Every bad input exits 2 with an error naming the flag or file and the
// rule, and leaves no run directory behind.
func TestBadInputRejected(t *testing.T) {
	tmp := t.TempDir()
	src := brokenTree(t)
	out := filepath.Join(tmp, "run") // never created
	file := writeFile(t, filepath.Join(tmp, "file"), "x")
	full := writeFile(t, filepath.Join(tmp, "full", "harness.log"), "x")
	done := writeFile(t, filepath.Join(tmp, "done", "results.json"), "{}")
	bad := writeFile(t, filepath.Join(tmp, "bad.json"), "{not json")
	noSpec := writeFile(t, filepath.Join(tmp, "nospec.json"), "{}")
	dupNemesis := writeFile(t, filepath.Join(tmp, "dup", "results.json"),
		`{"spec":{"workload":"alloc","nemesis":"kill,kill","backend":"local","seed":1}}`)

	// run gives the defaults a case does not give itself: a flag may be
	// given once.
	run := func(flags ...string) []string {
		args := []string{"run"}
		for _, d := range [][2]string{{"--backend", "local"}, {"--src", src}, {"--out", out}} {
			if !slices.Contains(flags, d[0]) {
				args = append(args, d[0], d[1])
			}
		}
		return append(args, flags...)
	}
	for _, tc := range []struct {
		name string
		args []string
		want string // in stderr
	}{
		{"rate NaN", run("--rate", "NaN"), "--rate NaN: must be a finite"},
		{"rate Inf", run("--rate", "+Inf"), "--rate +Inf: must be a finite"},
		{"rate negative", run("--rate", "-1"), "--rate -1: must be above zero"},
		{"rate zero", run("--rate", "0"), "--rate 0: must be above zero"},
		{"rate huge", run("--rate", "1e300"), "--rate 1e+300: must be at most"},
		{"rate malformed", run("--rate", "fast"), "-rate: parse error"},
		{"time-limit negative", run("--time-limit", "-5s"), "--time-limit -5s: must be above zero"},
		{"time-limit zero", run("--time-limit", "0s"), "--time-limit 0s: must be above zero"},
		{"time-limit huge", run("--time-limit", "1000h"), "--time-limit 1000h0m0s: must be at most"},
		{"time-limit overflow", run("--time-limit", "99999999999h"), `invalid value "99999999999h" for flag -time-limit`},
		{"time-limit malformed", run("--time-limit", "5"), `invalid value "5" for flag -time-limit`},
		{"quiet negative", run("--quiet", "-1s"), "--quiet -1s: must be above zero"},
		{"quiet zero", run("--quiet", "0"), "--quiet 0s: must be above zero"},
		{"lease negative", run("--lease", "-2s"), "--lease -2s: must be above zero"},
		{"lease zero", run("--lease", "0s"), "--lease 0s: must be above zero"},
		{"lease tiny", run("--lease", "1ns"), "--lease 1ns: must be at least"},
		{"lease huge", run("--lease", "2h"), "--lease 2h0m0s: must be at most"},
		{"check-timeout negative", run("--check-timeout", "-1s"), "--check-timeout -1s: must be above zero"},
		{"check-timeout zero", run("--check-timeout", "0s"), "--check-timeout 0s: must be above zero"},
		{"allocsvrs huge", run("--allocsvrs", "9"), "--allocsvrs 9: must be at most 3"},
		{"allocsvrs one", run("--allocsvrs", "1"), "--allocsvrs 1: must be at least 2"},
		{"allocsvrs zero", run("--allocsvrs", "0"), "--allocsvrs 0: must be above zero"},
		{"allocsvrs negative", run("--allocsvrs", "-1"), "--allocsvrs -1: must be above zero"},
		{"store-shards huge", run("--workload", "messages", "--store-shards", "4"), "--store-shards 4: must be at most 3"},
		{"store-shards zero", run("--store-shards", "0"), "--store-shards 0: must be above zero"},
		{"store-shards negative", run("--store-shards", "-1"), "--store-shards -1: must be above zero"},
		{"store-shards malformed", run("--store-shards", "two"), `invalid value "two" for flag -store-shards`},
		{"store-shards without a store", run("--workload", "alloc", "--store-shards", "2"), "--store-shards 2: the alloc workload runs no message store"},
		{"store fault without a store", run("--workload", "alloc", "--nemesis", "kill:store,pause"), "kill:store faults only a message store, which the alloc workload does not run"},
		{"store target without a store", run("--workload", "alloc", "--nemesis", "kill:leader+store-leader"), "target store-leader of kill needs a message store"},
		{"upgrade without a store", run("--workload", "alloc", "--nemesis", "upgrade"), "upgrade faults only a message store"},
		{"cross-shard bug with one shard", run("--workload", "messages", "--nemesis", "kill", "--bug", "redeliver-without-dedup"), "only shows with deliveries between store shards"},
		{"retention malformed", run("--workload", "messages", "--retention", "ten"), `invalid value "ten" for flag -retention`},
		{"retention zero", run("--workload", "messages", "--retention", "0s"), "--retention 0s: must be above zero"},
		{"retention with alloc", run("--workload", "alloc", "--retention", "10s"), "--retention 10s: the alloc workload runs no message store"},
		{"step zero", run("--step", "0"), "--step 0: must be above zero"},
		{"step huge", run("--step", "99999999999"), "--step 99999999999: must be at most"},
		{"step negative", run("--step", "-1"), `invalid value "-1" for flag -step`},
		{"seed overflow", run("--seed", "99999999999999999999999"), `invalid value "99999999999999999999999" for flag -seed`},
		{"nemesis empty", run("--nemesis", ""), `--nemesis is empty; use "none"`},
		{"nemesis blank", run("--nemesis", " "), `--nemesis is empty`},
		{"nemesis duplicate", run("--nemesis", "kill,kill"), "kill given twice"},
		{"nemesis duplicate narrowed", run("--nemesis", "kill:leader,pause,kill:one"), "kill given twice"},
		{"nemesis duplicate target", run("--nemesis", "kill:one+one"), "target one of kill given twice"},
		{"nemesis empty entry", run("--nemesis", "kill,,pause"), "empty entry"},
		{"nemesis trailing comma", run("--nemesis", "kill,"), "empty entry"},
		{"nemesis none and faults", run("--nemesis", "none,kill"), `"none" cannot be combined`},
		{"nemesis no target", run("--nemesis", "kill:"), "no target after the colon"},
		{"nemesis unknown", run("--nemesis", "earthquake"), `unknown nemesis "earthquake"`},
		{"fault-interval zero", run("--fault-interval", "0s-0s"), "--fault-interval 0s-0s: both bounds must be above zero"},
		{"fault-interval negative", run("--fault-interval", "-1s-2s"), `--fault-interval: "-1s-2s": want a range like 3s-10s of positive durations (the lower bound "": time: invalid duration`},
		{"fault-interval inverted", run("--fault-interval", "10s-3s"), `--fault-interval: "10s-3s": the upper bound is below the lower`},
		{"fault-interval huge", run("--fault-interval", "1s-2h"), "--fault-interval 1s-2h0m0s: must be at most"},
		{"fault-interval malformed", run("--fault-interval", "3s"), `--fault-interval: "3s": want a range like`},
		{"fault-interval empty", run("--fault-interval", ""), "--fault-interval is empty"},
		{"fault-hold zero", run("--fault-hold", "0s-1s"), "--fault-hold 0s-1s: both bounds must be above zero"},
		{"workload empty", run("--workload", ""), "--workload is empty"},
		{"backend empty", run("--backend", ""), "--backend is empty"},
		{"scenario empty", run("--scenario", ""), "--scenario is empty"},
		{"bug empty", run("--bug", ""), "--bug is empty"},
		{"src empty", run("--src", ""), "--src is empty"},
		{"out empty", run("--out", ""), "--out is empty"},
		{"src missing", run("--src", filepath.Join(tmp, "nonexistent")), "is not a seqd source tree"},
		{"src not a tree", run("--src", tmp), "is not a seqd source tree"},
		{"src inside a tree", run("--src", filepath.Join(src, "cmd")), "pass --src " + src},
		{"out is a file", run("--out", file), "not a directory"},
		{"out under a file", run("--out", filepath.Join(file, "run")), "not a directory"},
		{"out not empty", run("--out", filepath.Dir(full)), "is not empty"},
		{"out holds a run", run("--out", filepath.Dir(done)), "already holds a run"},
		{"out cannot be created", run("--out", "/proc/seqjepsen-test/run"), "cannot create the run directory"},
		{"run extra argument", run("extra"), `unexpected argument "extra"`},
		{"run flag given twice", run("--seed", "1", "--seed", "2"), "--seed is given twice; give it once"},
		{"scenarios extra argument", []string{"scenarios", "extra"}, `unexpected argument "extra"`},
		{"cleanup extra argument", []string{"cleanup", "extra"}, `unexpected argument "extra"`},
		{"cleanup bad flag", []string{"cleanup", "--force"}, "-force"},
		{"repro no file", []string{"repro"}, "give the results.json"},
		{"repro extra argument", []string{"repro", bad, noSpec}, "unexpected argument"},
		{"repro extra argument after flag", []string{"repro", bad, "--out", out, noSpec}, "unexpected argument"},
		{"repro two files after flags", []string{"repro", "--out", out, bad, noSpec}, "unexpected argument"},
		{"repro malformed", []string{"repro", bad}, bad + " is not a results.json"},
		{"repro missing", []string{"repro", filepath.Join(tmp, "missing.json")}, "missing.json"},
		{"repro no spec", []string{"repro", noSpec}, noSpec + " holds no run spec"},
		{"repro bad spec", []string{"repro", dupNemesis, "--src", src, "--out", out}, "kill given twice"},
		{"unknown command", []string{"frobnicate"}, `unknown command "frobnicate"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := seqjepsen(tc.args...)
			if code != report.ExitHarness || !strings.Contains(stderr, tc.want) {
				t.Errorf("%q: exit %d, want 2 with %q\nstdout %s\nstderr %s", tc.args, code, tc.want, stdout, stderr)
			}
			if _, err := os.Stat(out); err == nil {
				t.Fatalf("%q: wrote %s", tc.args, out)
			}
		})
	}
}

// -h, --help and help print the usage to stdout and exit 0, for every
// subcommand, and do nothing else.
func TestHelpExits0(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"--help"}, {"help"},
		{"run", "-h"}, {"run", "--help"}, {"run", "help"}, {"run", "--seed", "1", "-h"},
		{"repro", "-h"}, {"scenarios", "-h"}, {"cleanup", "-h"}, {"cleanup", "help"},
	} {
		code, stdout, stderr := seqjepsen(args...)
		if code != 0 || !strings.Contains(stdout, "Usage") || stderr != "" {
			t.Errorf("%q: exit %d, want 0 with the usage on stdout\nstdout %s\nstderr %s", args, code, stdout, stderr)
		}
	}
}

// An --out the harness cannot write in (here a read-only mount, or a
// directory without write permission when not root) is refused with the
// other options, before the run starts.
func TestUnwritableOutRejected(t *testing.T) {
	dir := t.TempDir()
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	if os.Geteuid() == 0 {
		if err := syscall.Mount("tmpfs", ro, "tmpfs", syscall.MS_RDONLY, "size=1m"); err != nil {
			t.Skipf("cannot mount a read-only tmpfs to test with: %v", err)
		}
		t.Cleanup(func() { syscall.Unmount(ro, 0) })
	} else if err := os.Chmod(ro, 0o555); err != nil {
		t.Fatal(err)
	}
	for _, out := range []string{ro, filepath.Join(ro, "run")} {
		code, stdout, stderr := seqjepsen("run", "--backend", "local", "--src", brokenTree(t), "--out", out)
		if code != report.ExitHarness || !strings.Contains(stderr, "is not writable") || strings.Contains(stdout+stderr, "report:") {
			t.Errorf("--out %s: exit %d, want 2 saying it is not writable\nstdout %s\nstderr %s", out, code, stdout, stderr)
		}
	}
}

// The upgrade nemesis with several store shards passes validation: the
// run goes on to the build (which the broken tree then fails).
func TestUpgradeWithShardsAccepted(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	code, stdout, stderr := seqjepsen("run", "--backend", "local", "--workload", "messages", "--nemesis", "upgrade,kill",
		"--store-shards", "2", "--src", brokenTree(t), "--out", out)
	if code != report.ExitHarness || !strings.Contains(stdout+stderr, "cannot build cmd/seqd") {
		t.Errorf("exit %d, want 2 at the build\nstdout %s\nstderr %s", code, stdout, stderr)
	}
}
