package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"io"
	"math"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/seqd/seqd/internal/bench"
	"github.com/seqd/seqd/internal/cliflag"
	seqdv1 "github.com/seqd/seqd/proto/seqd/v1"
)

// commands are seqbench's subcommands, as main runs them.
var commands = map[string]func(context.Context, []string, io.Writer, io.Writer) error{
	"alloc":         runAlloc,
	"compare":       runCompare,
	"send":          runSend,
	"sync":          runSyncBench,
	"compare-store": runCompareStore,
	"disk":          runDisk,
	"failover":      runFailover,
}

// runBad runs cmd with args on a cancelled context, so an input the
// checks miss fails fast instead of starting a cluster.
func runBad(cmd string, args []string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var o, e bytes.Buffer
	err = commands[cmd](ctx, args, &o, &e)
	return o.String(), e.String(), err
}

// unwritableJSON are --json paths no run can write its results to.
func unwritableJSON(t *testing.T) (dir string, paths map[string]string) {
	dir = t.TempDir()
	paths = map[string]string{
		"missing directory": filepath.Join(dir, "no", "such", "dir", "x.json"),
		"a directory":       dir,
		"under a file":      filepath.Join(writeFile(t, dir, "file"), "x.json"),
		"in /proc":          "/proc/x.json",
	}
	if os.Geteuid() != 0 { // root writes read-only files and directories
		ro := filepath.Join(dir, "ro")
		if err := os.Mkdir(ro, 0o555); err != nil {
			t.Fatal(err)
		}
		paths["read-only directory"] = filepath.Join(ro, "x.json")
		f := writeFile(t, dir, "ro.json")
		if err := os.Chmod(f, 0o444); err != nil {
			t.Fatal(err)
		}
		paths["read-only file"] = f
	}
	return dir, paths
}

func writeFile(t *testing.T, dir, name string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("old\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestBadFlagsAreUsageErrors(t *testing.T) {
	type bad struct {
		args []string
		want string // in the error: the flag and the rule
	}
	huge := "99999999999"
	perCmd := map[string][]bad{
		"alloc": {
			{[]string{"--concurrency", "0"}, "--concurrency 0: must be at least 1"},
			{[]string{"--concurrency", "-1"}, "--concurrency -1"},
			{[]string{"--concurrency", huge}, "--concurrency " + huge + ": must be at least 1 and at most 10000"},
			{[]string{"--keys", "0"}, "keys start at 1"},
			{[]string{"--duration", "0s"}, "--duration 0s: must be positive"},
			{[]string{"--duration", "-1s"}, "--duration -1s"},
			{[]string{"--warmup", "-1s"}, "--warmup -1s"},
			{[]string{"--duration", "2562047h"}, "--duration 2562047h0m0s: must be at most 168h0m0s"},
			{[]string{"--warmup", "169h"}, "--warmup 169h0m0s: must be at most 168h0m0s"},
			{[]string{"--rate", "NaN"}, "--rate NaN"},
			{[]string{"--rate", "Inf"}, "--rate +Inf"},
			{[]string{"--rate", "-Inf"}, "--rate -Inf"},
			{[]string{"--rate", "-5"}, "--rate -5"},
			{[]string{"--rate", "1e-9"}, "--rate 1e-09"},
			{[]string{"--rate", "1e300"}, "--rate 1e+300"},
			{[]string{"--batch-size", "0"}, "--batch-size 0"},
			{[]string{"--batch", "--batch-size", "-3"}, "--batch-size -3"},
			{[]string{"--batch", "--batch-size", "10001"}, "--batch-size 10001: must be 1..10000"},
			{[]string{"--batch", "--coalesce"}, "exclusive"},
		},
		"compare": {
			{[]string{"--systems", ""}, "--systems is empty"},
			{[]string{"--systems", " , "}, "--systems is empty"},
			{[]string{"--systems", "mysql"}, `unknown system "mysql"`},
			{[]string{"--depth", "0"}, "--depth 0"},
			{[]string{"--depth", huge}, "--depth " + huge},
			{[]string{"--concurrency", huge}, "--concurrency " + huge},
			{[]string{"--warmup", "-1ns"}, "--warmup -1ns"},
			{[]string{"--duration", "0s"}, "--duration 0s"},
		},
		"send": {
			{[]string{"--body-bytes", "0"}, "--body-bytes 0: must be 1..65536"},
			{[]string{"--body-bytes", "-1"}, "--body-bytes -1"},
			{[]string{"--body-bytes", "70000"}, "--body-bytes 70000: must be 1..65536 (the store's 64 KiB body limit)"},
			{[]string{"--body-bytes", huge}, "--body-bytes " + huge},
			{[]string{"--concurrency", huge}, "--concurrency " + huge},
			{[]string{"--rate", "NaN"}, "--rate NaN"},
			{[]string{"--warmup", "-1s"}, "--warmup -1s"},
			{[]string{"--users", "0"}, "--users 0"},
			{[]string{"--users", "1"}, "--users 1"},
			{[]string{"--users", "4294967296"}, "--users 4294967296"},
			{[]string{"--first-user", "0"}, "--first-user 0"},
			{[]string{"--half-rate", "--rate", "10"}, "exclusive"},
			{[]string{"--retention", "-1s"}, "--retention -1s is negative"},
			{[]string{"--retention", "500ms"}, "--retention 500ms: give at least 1s"},
			{[]string{"--addr", "127.0.0.1:1", "--retention", "1m"}, "--retention is for the in-process cluster"},
			{[]string{"--metrics", "http://127.0.0.1:7480/metrics"}, "--metrics is for a cluster at --addr"},
			{[]string{"--addr", "127.0.0.1:1", "--metrics", "ftp://h/metrics"}, `--metrics "ftp://h/metrics": want http(s) URLs`},
			{[]string{"--addr", "127.0.0.1:1", "--metrics", "127.0.0.1:7480"}, `--metrics "127.0.0.1:7480": want http(s) URLs`},
			{[]string{"--addr", "127.0.0.1:1", "--metrics", " , "}, `--metrics " , " names no URL`},
			{[]string{"--read-fanout"}, "--read-fanout is for use with --group-size"},
			{[]string{"--drain", "5s"}, "--drain is for use with --group-size"},
			{[]string{"--senders-per-group", "3"}, "--senders-per-group is for use with --group-size"},
			{[]string{"--subscribers", "-7"}, "--subscribers -7"},
			{[]string{"--drain", "-1s"}, "--drain -1s"},
			{[]string{"--group-size", "1"}, "--group-size 1"},
			{[]string{"--group-size", "20000", "--users", "10000"}, "fewer than --group-size"},
			{[]string{"--group-size", "4", "--senders-per-group", "0"}, "--senders-per-group 0"},
			{[]string{"--group-size", "8", "--subscribers", "5"}, "--subscribers 5: only 4 members"},
			{[]string{"--group-size", "2", "--senders-per-group", "1", "--users", "1000000"}, "500000 streams"},
		},
		"sync": {
			{[]string{"--events", "18446744073709551615"}, "--events 18446744073709551615: must be 2 (one send) .. 1000000000"},
			{[]string{"--events", "0"}, "--events 0"},
			{[]string{"--events", "1"}, "--events 1"},
			{[]string{"--page", "0"}, "--page 0"},
			{[]string{"--page", "1001"}, "--page 1001"},
			{[]string{"--paths", ""}, `--paths ""`},
			{[]string{"--paths", "sync,sync,bogus"}, "--paths"},
			{[]string{"--users", "16777217"}, "--users 16777217"},
			{[]string{"--concurrency", "0"}, "--concurrency 0"},
			{[]string{"--load-concurrency", huge}, "--load-concurrency " + huge},
			{[]string{"--body-bytes", "70000"}, "--body-bytes 70000"},
			{[]string{"--warmup", "-1s"}, "--warmup -1s"},
		},
		"compare-store": {
			{[]string{"--redis-fsync", "bogus"}, `--redis-fsync "bogus": use always, everysec or no`},
			{[]string{"--redis-fsync", ""}, `--redis-fsync ""`},
			{[]string{"--systems", ""}, "--systems is empty"},
			{[]string{"--systems", "redis-inbox,nope"}, `unknown system "nope"`},
			{[]string{"--body-bytes", huge}, "--body-bytes " + huge},
			{[]string{"--concurrency", huge}, "--concurrency " + huge},
			{[]string{"--users", "1"}, "--users 1"},
			{[]string{"--warmup", "-1s"}, "--warmup -1s"},
		},
		"disk": {
			{[]string{"--messages", "0"}, "--messages 0"},
			{[]string{"--messages", "-1"}, "--messages -1"},
			{[]string{"--messages", huge}, "--messages " + huge},
			{[]string{"--body-bytes", huge}, "--body-bytes " + huge},
			{[]string{"--concurrency", huge}, "--concurrency " + huge},
			{[]string{"--users", "0"}, "--users 0"},
		},
		"failover": {
			{[]string{"--runs", "0"}, "--runs 0"},
			{[]string{"--runs", "-1"}, "--runs -1"},
			{[]string{"--runs", huge}, "--runs " + huge},
			{[]string{"--lease", "-1s"}, "--lease -1s"},
			{[]string{"--lease", "1h"}, "--lease 1h0m0s"},
		},
	}
	jsonDir, unwritable := unwritableJSON(t)
	for cmd := range commands {
		if cmd != "failover" && cmd != "disk" { // they start their own clusters: no --addr
			perCmd[cmd] = append(perCmd[cmd],
				bad{[]string{"--addr", "nonsense"}, `--addr "nonsense" is not host:port`},
				bad{[]string{"--addr", "127.0.0.1:99999"}, `--addr "127.0.0.1:99999" is not host:port with a port 1..65535`},
				bad{[]string{"--addr", "127.0.0.1:1, x"}, `--addr "x" is not host:port`})
		}
		// Every command refuses positional arguments and a --json file it
		// could not write, before starting anything.
		perCmd[cmd] = append(perCmd[cmd],
			bad{[]string{"extra"}, cmd + `: unexpected argument "extra"`},
			bad{[]string{"--json", "a.json", "--json=b.json"}, "--json is given twice; give it once"},
			bad{[]string{"--json", filepath.Join(t.TempDir(), "ok.json"), "extra", "--runs", "1"}, `unexpected argument "extra"`})
		for _, p := range unwritable {
			perCmd[cmd] = append(perCmd[cmd], bad{[]string{"--json", p}, "--json " + p})
		}
	}
	for cmd, cases := range perCmd {
		for _, c := range cases {
			t.Run(cmd+" "+strings.Join(c.args, " "), func(t *testing.T) {
				stdout, stderr, err := runBad(cmd, c.args)
				var ue *cliflag.UsageError
				if !errors.As(err, &ue) || ue.Printed {
					t.Fatalf("got %v, want a usage error", err)
				}
				if !strings.Contains(err.Error(), c.want) {
					t.Errorf("got %q, want it to say %q", err, c.want)
				}
				if stdout != "" || stderr != "" {
					t.Errorf("printed before failing:\nstdout: %s\nstderr: %s", stdout, stderr)
				}
				var report bytes.Buffer
				if code := exitCode(cmd, err, &report); code != 2 {
					t.Errorf("exit code %d, want 2", code)
				}
				if want := "seqbench: " + err.Error() + "\nRun \"seqbench " + cmd + " -h\" for the flags.\n"; report.String() != want {
					t.Errorf("reported %q, want %q", report.String(), want)
				}
			})
		}
	}
	// The checks created nothing: the directory holds what unwritableJSON
	// put there, and no temporary file.
	entries, err := os.ReadDir(jsonDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if n := e.Name(); n != "file" && n != "ro" && n != "ro.json" {
			t.Errorf("the --json checks left %s behind in %s", n, jsonDir)
		}
	}
}

// The flag package prints its own parse errors with the flag list;
// seqbench must not print them a second time.
func TestMalformedFlagsArePrintedOnce(t *testing.T) {
	cases := []struct {
		cmd  string
		args []string
	}{
		{"alloc", []string{"--concurrency", "x"}},
		{"alloc", []string{"--concurrency", ""}},
		{"alloc", []string{"--rate", "fast"}},
		{"alloc", []string{"--nope"}},
		{"send", []string{"--body-bytes", "1e3"}},
		{"sync", []string{"--events", "18446744073709551616"}},
		{"sync", []string{"--events", "-1"}},
		{"compare", []string{"--duration", "10"}},
		{"compare-store", []string{"--users", "many"}},
		{"disk", []string{"--keep=maybe"}},
		{"failover", []string{"--lease", "2x"}},
	}
	for _, c := range cases {
		t.Run(c.cmd+" "+strings.Join(c.args, " "), func(t *testing.T) {
			stdout, stderr, err := runBad(c.cmd, c.args)
			var ue *cliflag.UsageError
			if !errors.As(err, &ue) || !ue.Printed {
				t.Fatalf("got %v, want a printed usage error", err)
			}
			if n := strings.Count(stderr, err.Error()); n != 1 || !strings.Contains(stderr, "-json") {
				t.Errorf("the error is on stderr %d times, want once with the flags:\n%s", n, stderr)
			}
			var report bytes.Buffer
			if code := exitCode(c.cmd, err, &report); code != 2 || report.Len() != 0 {
				t.Errorf("exit code %d, reported %q; want 2 and nothing more", code, report.String())
			}
			if stdout != "" {
				t.Errorf("stdout: %s", stdout)
			}
		})
	}
}

func TestHelpExitsZero(t *testing.T) {
	for cmd := range commands {
		for _, h := range []string{"-h", "--help"} {
			stdout, stderr, err := runBad(cmd, []string{h})
			if !errors.Is(err, flag.ErrHelp) || exitCode(cmd, err, io.Discard) != 0 {
				t.Errorf("%s %s: got %v, want help and exit 0", cmd, h, err)
			}
			if stdout != "" || !strings.Contains(stderr, "-json") {
				t.Errorf("%s %s: want the flags on stderr only; stdout %q, stderr %q", cmd, h, stdout, stderr)
			}
		}
	}
}

func TestRunFailuresExitOne(t *testing.T) {
	var report bytes.Buffer
	if code := exitCode("alloc", errors.New("boom"), &report); code != 1 || report.String() != "seqbench: boom\n" {
		t.Errorf("code %d, reported %q", code, report.String())
	}
}

func TestCheckSucceeded(t *testing.T) {
	samples := []bench.ErrorSample{{Message: "rpc error: code = InvalidArgument desc = body is 70000 bytes", Count: 9}}
	cases := []struct {
		ops, errs uint64
		samples   []bench.ErrorSample
		want      string // "" for no error
	}{
		{0, 9, samples, "send 1:1: no operation succeeded (9 failed); most frequent error: rpc error: code = InvalidArgument"},
		{0, 0, nil, "send 1:1: no operation succeeded (0 failed)"},
		{1, 9, samples, ""},
		{math.MaxUint64, 0, nil, ""},
	}
	for _, c := range cases {
		err := checkSucceeded("send 1:1", c.ops, c.errs, c.samples)
		if (err == nil) != (c.want == "") || err != nil && !strings.Contains(err.Error(), c.want) {
			t.Errorf("ops %d errors %d: got %v, want %q", c.ops, c.errs, err, c.want)
		}
	}
}

// The --json check leaves nothing behind, and the final write replaces
// the file whole, keeping a symbolic link a link.
func TestJSONFileIsCheckedThenReplacedWhole(t *testing.T) {
	dir := t.TempDir()
	fresh := filepath.Join(dir, "fresh.json")
	if err := checkJSON(fresh); err != nil {
		t.Fatal(err)
	}
	if err := checkJSON(""); err != nil {
		t.Fatalf("empty --json means no file: %v", err)
	}
	old := writeFile(t, dir, "old.json")
	if err := checkJSON(old); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(old); string(b) != "old\n" {
		t.Fatalf("the check changed the file: %q", b)
	}
	link := filepath.Join(dir, "link.json")
	if err := os.Symlink(old, link); err != nil {
		t.Fatal(err)
	}
	// A value that cannot be encoded fails before anything is written.
	if err := bench.WriteJSON(link, map[string]any{"c": make(chan int)}); err == nil || !strings.Contains(err.Error(), "--json "+link) {
		t.Fatalf("got %v, want an error naming --json", err)
	}
	if err := bench.WriteJSON(link, map[string]int{"n": 1}); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(old); string(b) != "{\n  \"n\": 1\n}\n" {
		t.Fatalf("through the link: %q", b)
	}
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", fi, err)
	}
	entries, _ := os.ReadDir(dir)
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, " ") != "link.json old.json" {
		t.Fatalf("directory holds %v, want link.json old.json", names)
	}
	if err := bench.WriteJSON(filepath.Join(dir, "gone", "x.json"), 1); err == nil || !strings.Contains(err.Error(), "write --json") {
		t.Fatalf("got %v", err)
	}
}

func TestCompareStoreMeasuringNothingFails(t *testing.T) {
	t.Setenv("PATH", t.TempDir()) // no redis-server
	jsonPath := filepath.Join(t.TempDir(), "store.json")
	var stdout, stderr bytes.Buffer
	err := runCompareStore(context.Background(), []string{"--systems", "redis-inbox", "--duration", "1s", "--json", jsonPath}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "nothing was measured") {
		t.Fatalf("got %v, want nothing was measured", err)
	}
	if _, err := os.Stat(jsonPath); err != nil {
		t.Errorf("the skips are still written: %v", err)
	}
	if n := strings.Count(stdout.String()+stderr.String(), "redis-inbox: skipped"); n != 1 {
		t.Errorf("the skip is printed %d times, want once:\nstdout:\n%s\nstderr:\n%s", n, &stdout, &stderr)
	}
}

// spread counts by whole rounds of slots: the same shares as counting
// key by key, and quick for any --keys.
func TestNoopSpreadForAnyKeys(t *testing.T) {
	table := &seqdv1.RoutingTable{SectionSize: 10, NumSlots: 4}
	for _, owner := range []string{"b", "a", "b", "c"} {
		table.Slots = append(table.Slots, &seqdv1.SlotAssignment{Owner: owner})
	}
	rt, err := newNoopRouting(table)
	if err != nil {
		t.Fatal(err)
	}
	for _, keys := range []uint64{1, 9, 10, 11, 39, 40, 41, 95, 1000, 12345} {
		want := make([]float64, rt.servers)
		for k := uint64(1); k <= keys; k++ {
			want[rt.server(k)]++
		}
		got := rt.spread(keys)
		for i := range want {
			if math.Abs(got[i]-want[i]/float64(keys)) > 1e-12 {
				t.Errorf("keys %d: got %v, want counts %v", keys, got, want)
				break
			}
		}
	}
	for _, keys := range []uint64{math.MaxUint64, math.MaxUint64 - 1, 1 << 63} {
		sum := 0.0
		for _, f := range rt.spread(keys) {
			sum += f
		}
		if math.Abs(sum-1) > 1e-9 {
			t.Errorf("keys %d: shares add up to %v", keys, sum)
		}
	}
}

// A gateway that does not answer stops the run before it starts, instead
// of a run whose every send failed.
func TestSendToADeadGatewayFailsAtOnce(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there now
	var o, e bytes.Buffer
	start := time.Now()
	err = commands["send"](context.Background(), []string{"--addr", addr, "--gateway", "--duration", "1s", "--warmup", "0s"}, &o, &e)
	if err == nil || !strings.Contains(err.Error(), "does not answer Messages calls") {
		t.Fatalf("send to a dead gateway: %v, want it to say the gateway does not answer", err)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("took %v", took)
	}
	if strings.Contains(o.String(), "msgs/s") {
		t.Fatalf("printed results for a run that never started:\n%s", o.String())
	}
}
