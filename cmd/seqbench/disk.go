package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/seqd/seqd/internal/bench"
)

const diskUsage = `Usage: seqbench disk [flags]

Starts an in-process cluster (one store shard of 3 replicas, Raft with
fsync, Badger state machine), sends --messages acknowledged 1:1 messages
with --body-bytes bodies, waits until every replica has applied them, and
reports the disk space of each replica's store directory (<replica>/store:
the Badger directory and the Raft directory) divided by the message count,
at these points:

  live         everything running; Badger's memtable is in its write-ahead
               .mem file, the Raft log (raft-boltdb) holds every entry
  snapshotted  after a Raft snapshot on every replica (the snapshot holds a
               copy of the Badger state; the log keeps its trailing 10,240
               entries, hashicorp/raft's default)
  closed       after the cluster shut down: memtables flushed to SSTables,
               preallocated files truncated
  flattened    after opening each replica's Badger offline and running
               Flatten and value-log GC (a no-op when every table is
               already on one level)
  rewritten    Badger only: the newest version of every live key copied
               into a fresh Badger (Backup then Load), what a full
               compaction converges to; Raft files as in "flattened"

Space is allocated space (blocks, as du shows) unless the JSON says
apparent. One message writes two inbox copies (sender and recipient) plus
its message record, dedup record, history index, unread counters and
change-log entry.

Flags:
`

// diskUsageOf is the space of one replica's store directory by part.
type diskUsageOf struct {
	Replica string `json:"replica"`
	// Allocated bytes per part: badger_sst, badger_vlog, badger_memtable,
	// badger_other (MANIFEST, DISCARD, KEYREGISTRY), raft_log, raft_snapshots,
	// other.
	Parts    map[string]int64 `json:"allocated_bytes"`
	Apparent map[string]int64 `json:"apparent_bytes"`
	Total    int64            `json:"total_allocated_bytes"`
	Badger   int64            `json:"badger_allocated_bytes"`
	Raft     int64            `json:"raft_allocated_bytes"`
}

type diskPhase struct {
	Phase    string        `json:"phase"`
	Replicas []diskUsageOf `json:"replicas"`
	// Per message, for the first replica.
	BytesPerMsg       float64 `json:"bytes_per_msg"`
	BadgerBytesPerMsg float64 `json:"badger_bytes_per_msg"`
	RaftBytesPerMsg   float64 `json:"raft_bytes_per_msg"`
	// AllReplicasBytesPerMsg adds up every replica.
	AllReplicasBytesPerMsg float64 `json:"all_replicas_bytes_per_msg"`
	Note                   string  `json:"note,omitempty"`
}

type diskReport struct {
	Messages    int         `json:"messages"`
	BodyBytes   int         `json:"body_bytes"`
	Users       uint64      `json:"users"`
	Concurrency int         `json:"concurrency"`
	SendS       float64     `json:"send_s"`
	Phases      []diskPhase `json:"phases"`
	What        string      `json:"what"`
	DataDir     string      `json:"data_dir,omitempty"`
	Cluster     string      `json:"cluster"`
	Env         bench.Env   `json:"env"`
}

func runDisk(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fset := flag.NewFlagSet("seqbench disk", flag.ContinueOnError)
	fset.SetOutput(stderr)
	var (
		messages    = fset.Int("messages", 100_000, "1:1 messages to send")
		concurrency = fset.Int("concurrency", 64, "sending workers")
		users       = fset.Uint64("users", 10_000, "users taking part")
		bodyBytes   = fset.Int("body-bytes", 100, "message body size in bytes")
		keep        = fset.Bool("keep", false, "keep the cluster's data directory (its path is printed)")
		jsonPath    = fset.String("json", "", "also write the results as JSON to this file")
	)
	fset.Usage = func() {
		fmt.Fprint(stderr, diskUsage)
		fset.PrintDefaults()
	}
	pop := population{}
	if err := parseFlags(fset, args, func() error {
		pop = population{first: 1, n: *users}
		if *messages < 1 || *messages > maxPreload {
			return fmt.Errorf("--messages %d: send at least one and at most %d", *messages, maxPreload)
		}
		return firstErr(checkConcurrency("--concurrency", *concurrency), checkBodyBytes(*bodyBytes), pop.validate(), checkJSON(*jsonPath))
	}); err != nil {
		return err
	}
	env := checkEnv(stderr)
	dir, err := os.MkdirTemp("", "seqbench-disk-")
	if err != nil {
		return err
	}
	if *keep {
		fmt.Fprintf(stderr, "seqbench: data kept in %s\n", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	target, err := openStore(ctx, "", dir, stderr)
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			target.Close()
		}
	}()
	rep := diskReport{Messages: *messages, BodyBytes: *bodyBytes, Users: pop.n, Concurrency: *concurrency, Cluster: target.describe(), Env: env,
		What: "allocated bytes of <data>/<replica>/store (badger/ and raft/) divided by --messages"}
	if *keep {
		rep.DataDir = dir
	}
	mc, err := dialMessages(ctx, target, false)
	if err != nil {
		return err
	}
	progress := bench.NewProgress(stderr)
	progress.Printf("seqbench: sending %s messages\n", bench.FormatCount(float64(*messages)))
	took, err := preload(ctx, mc.api, pop, *messages, *concurrency, *bodyBytes, nil, progress)
	mc.Close()
	if err != nil {
		return err
	}
	rep.SendS = took.Seconds()
	progress.Printf("seqbench: sent in %.1fs (%s msgs/s); waiting for every replica to apply them\n", took.Seconds(), bench.FormatCount(float64(*messages)/took.Seconds()))

	lc := target.local
	// Each store replica keeps its data in <data>/<replica id>/store.
	storeDirs, err := filepath.Glob(filepath.Join(dir, "*", "store"))
	if err != nil || len(storeDirs) != len(lc.Stores[0]) {
		return fmt.Errorf("found store directories %v under %s, want one per replica (%d): %v", storeDirs, dir, len(lc.Stores[0]), err)
	}
	replicas := make([]string, len(storeDirs))
	for i, d := range storeDirs {
		replicas[i] = filepath.Base(filepath.Dir(d))
	}
	if err := waitApplied(ctx, target, 60*time.Second); err != nil {
		return err
	}
	measure := func(phase, note string, dirs []string) error {
		p := diskPhase{Phase: phase, Note: note}
		for i, d := range dirs {
			u, err := usageOf(replicas[i], d)
			if err != nil {
				return err
			}
			p.Replicas = append(p.Replicas, u)
			p.AllReplicasBytesPerMsg += float64(u.Total) / float64(*messages)
		}
		first := p.Replicas[0]
		p.BytesPerMsg = float64(first.Total) / float64(*messages)
		p.BadgerBytesPerMsg = float64(first.Badger) / float64(*messages)
		p.RaftBytesPerMsg = float64(first.Raft) / float64(*messages)
		rep.Phases = append(rep.Phases, p)
		return nil
	}
	if err := measure("live", "", storeDirs); err != nil {
		return err
	}
	for i := range lc.Stores[0] {
		if n := lc.Store(0, i); n != nil {
			if err := n.Store().Raft().Snapshot().Error(); err != nil {
				return fmt.Errorf("raft snapshot on %s: %w", replicas[i], err)
			}
		}
	}
	if err := measure("snapshotted", "", storeDirs); err != nil {
		return err
	}
	closed = true
	if err := target.Close(); err != nil {
		progress.Printf("seqbench: closing the cluster: %v\n", err)
	}
	if err := measure("closed", "", storeDirs); err != nil {
		return err
	}
	var notes []string
	for _, d := range storeDirs {
		note, err := flattenBadger(filepath.Join(d, "badger"))
		if err != nil {
			return err
		}
		notes = append(notes, note)
	}
	if err := measure("flattened", strings.Join(notes, "; "), storeDirs); err != nil {
		return err
	}
	// The rewritten copies go next to each store dir, with the Raft files
	// linked in so the same accounting applies.
	var rewritten []string
	for _, d := range storeDirs {
		nd := d + "-rewritten"
		if err := rewriteBadger(filepath.Join(d, "badger"), filepath.Join(nd, "badger")); err != nil {
			return err
		}
		if err := os.Symlink(filepath.Join(d, "raft"), filepath.Join(nd, "raft")); err != nil {
			return err
		}
		rewritten = append(rewritten, nd)
	}
	if err := measure("rewritten", "Badger: newest version of each live key in a fresh Badger (Backup, Load); Raft: as flattened", rewritten); err != nil {
		return err
	}
	printDisk(stdout, &rep)
	if *jsonPath != "" {
		return bench.WriteJSON(*jsonPath, rep)
	}
	return nil
}

// waitApplied waits until every store replica has applied the same index
// and it has stopped moving.
func waitApplied(ctx context.Context, t *seqdTarget, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last uint64
	stable := 0
	for time.Now().Before(deadline) {
		lo, hi := ^uint64(0), uint64(0)
		for i := range t.local.Stores[0] {
			n := t.local.Store(0, i)
			if n == nil {
				continue
			}
			a := n.Store().FSM().AppliedIndex()
			lo, hi = min(lo, a), max(hi, a)
		}
		if lo == hi && hi == last {
			if stable++; stable >= 5 {
				return nil
			}
		} else {
			stable = 0
		}
		last = hi
		sleep(ctx, 100*time.Millisecond)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return errors.New("store replicas did not converge on one applied index")
}

// usageOf adds up the store directory of one replica by part.
func usageOf(replica, dir string) (diskUsageOf, error) {
	u := diskUsageOf{Replica: replica, Parts: map[string]int64{}, Apparent: map[string]int64{}}
	err := walkFollowingTopLinks(dir, func(rel string, fi fs.FileInfo) {
		part := partOf(rel)
		alloc := allocated(fi)
		u.Parts[part] += alloc
		u.Apparent[part] += fi.Size()
		u.Total += alloc
		switch {
		case strings.HasPrefix(part, "badger"):
			u.Badger += alloc
		case strings.HasPrefix(part, "raft"):
			u.Raft += alloc
		}
	})
	return u, err
}

// walkFollowingTopLinks walks dir, following symbolic links among its
// direct entries, and calls fn for every regular file.
func walkFollowingTopLinks(dir string, fn func(rel string, fi fs.FileInfo)) error {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range entries {
		root := filepath.Join(dir, e.Name())
		if real, err := filepath.EvalSymlinks(root); err == nil {
			root = real
		}
		err := filepath.Walk(root, func(path string, fi fs.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if fi.Mode().IsRegular() {
				rel, _ := filepath.Rel(root, path)
				fn(filepath.Join(e.Name(), rel), fi)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

// partOf names the part a file of a store directory belongs to.
func partOf(rel string) string {
	dir, name := filepath.Split(filepath.ToSlash(rel))
	switch {
	case strings.HasPrefix(dir, "badger/"):
		switch filepath.Ext(name) {
		case ".sst":
			return "badger_sst"
		case ".vlog":
			return "badger_vlog"
		case ".mem":
			return "badger_memtable"
		}
		return "badger_other"
	case strings.HasPrefix(dir, "raft/snapshots/"):
		return "raft_snapshots"
	case strings.HasPrefix(dir, "raft/"):
		if name == "raft.db" {
			return "raft_log"
		}
		return "raft_other"
	}
	return "other"
}

// badgerOptions are close to the store FSM's (store/fsm.go), for opening
// a replica's Badger offline.
func badgerOptions(dir string) badger.Options {
	return badger.DefaultOptions(dir).
		WithLogger(nil).
		WithSyncWrites(false).
		WithNumVersionsToKeep(1).
		WithValueThreshold(1 << 10)
}

// flattenBadger opens dir, runs Flatten and value-log GC, and closes it.
func flattenBadger(dir string) (string, error) {
	db, err := badger.Open(badgerOptions(dir))
	if err != nil {
		return "", fmt.Errorf("open %s: %w", dir, err)
	}
	if err := db.Flatten(2); err != nil {
		db.Close()
		return "", fmt.Errorf("flatten %s: %w", dir, err)
	}
	gcs := 0
	for ; gcs < 100; gcs++ {
		if err := db.RunValueLogGC(0.5); err != nil {
			break // badger.ErrNoRewrite: nothing left worth rewriting
		}
	}
	if err := db.Close(); err != nil {
		return "", err
	}
	return fmt.Sprintf("%s: %d value-log file(s) rewritten", filepath.Base(filepath.Dir(filepath.Dir(dir))), gcs), nil
}

// rewriteBadger copies the newest version of every live key of src into a
// fresh Badger at dst.
func rewriteBadger(src, dst string) error {
	s, err := badger.Open(badgerOptions(src))
	if err != nil {
		return fmt.Errorf("open %s: %w", src, err)
	}
	defer s.Close()
	d, err := badger.Open(badgerOptions(dst))
	if err != nil {
		return fmt.Errorf("open %s: %w", dst, err)
	}
	pr, pw := io.Pipe()
	go func() {
		_, err := s.Backup(pw, 0)
		pw.CloseWithError(err)
	}()
	if err := d.Load(pr, 256); err != nil {
		pr.CloseWithError(err)
		d.Close()
		return fmt.Errorf("copy %s: %w", src, err)
	}
	return d.Close()
}

var diskParts = []string{"badger_sst", "badger_vlog", "badger_memtable", "badger_other", "raft_log", "raft_snapshots"}

func printDisk(w io.Writer, rep *diskReport) {
	fmt.Fprintf(w, "sent         %s 1:1 messages, %d-byte bodies, %d users, %d workers, in %.1fs\n",
		bench.FormatCount(float64(rep.Messages)), rep.BodyBytes, rep.Users, rep.Concurrency, rep.SendS)
	fmt.Fprintf(w, "measured     %s, replica %s (allocated bytes)\n\n", rep.What, rep.Phases[0].Replicas[0].Replica)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprint(tw, "phase\t")
	for _, p := range diskParts {
		fmt.Fprintf(tw, "%s\t", strings.ReplaceAll(p, "_", " "))
	}
	fmt.Fprintln(tw, "total\tB/msg\tbadger B/msg\traft B/msg\t3 replicas B/msg\t")
	for _, ph := range rep.Phases {
		u := ph.Replicas[0]
		fmt.Fprintf(tw, "%s\t", ph.Phase)
		for _, p := range diskParts {
			fmt.Fprintf(tw, "%s\t", mib(u.Parts[p]))
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f\t%.0f\t\n", mib(u.Total), ph.BytesPerMsg, ph.BadgerBytesPerMsg, ph.RaftBytesPerMsg, ph.AllReplicasBytesPerMsg)
	}
	tw.Flush()
	for _, ph := range rep.Phases {
		if ph.Note != "" {
			fmt.Fprintf(w, "%s: %s\n", ph.Phase, ph.Note)
		}
	}
	fmt.Fprintf(w, "cluster      %s\n", rep.Cluster)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
