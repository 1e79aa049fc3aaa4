// Command seqctl is the operator's command line for seqd: sequence numbers,
// the routing table, cluster status, drains and arbiter membership, and
// the message store (send, sync, tail, unread, groups) as a chat front end
// would use it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/seqd/seqd/internal/cliflag"
)

const defaultAddr = "127.0.0.1:7400"

// command is one seqctl verb.
type command struct {
	name  string
	forms []form
	run   func(ctx context.Context, e *env, cmd *command, args []string) error
	// notes, if set, end the command's -h text.
	notes string
}

// form is one way to call a command and what it does.
type form struct{ synopsis, summary string }

var commands = []*command{
	{name: "next", run: runNext, forms: []form{{"next KEY [KEY...]", "allocate one seq per key"}}},
	{name: "current", run: runCurrent, forms: []form{{"current KEY [KEY...]", "the last seq handed out per key, without allocating"}}},
	{name: "routes", run: runRoutes, forms: []form{{"routes", "the routing table: which AllocSvr owns which slots, and the store shard map"}}},
	{name: "replicas", run: runReplicas, forms: []form{
		{"replicas [--shard S]", "every store replica's format, applied index and state (during upgrades: what is left)"},
		{"replicas add ID", "make a store replica started without --store-peer a voter of its shard (or tell the shard a voter's new Raft address)"},
		{"replicas remove ID", "take a store replica out of its shard; its id cannot register again"},
	}},
	{name: "status", run: runStatus, forms: []form{{"status", "the arbiter group and every AllocSvr"}}},
	{name: "drain", run: runDrain, forms: []form{{"drain NODE [--wait] [--wait-timeout D]", "move every slot off an AllocSvr before maintenance"}}},
	{name: "undrain", run: runUndrain, forms: []form{{"undrain NODE", "let a drained AllocSvr take slots again"}}},
	{name: "arbiter", run: runArbiter, forms: []form{
		{"arbiter join ID --raft-addr A --grpc-addr B [--gossip-addr C]", "add a voter to the arbiter group"},
		{"arbiter remove ID", "remove a voter from the arbiter group"},
	}},
	{name: "send", run: runSend, notes: sendNotes, forms: []form{
		{"send --from A --to B[,C...] [--conv ID] [--client-msg-id X] [--meta k=v ...] TEXT", "send a DIRECT message (prints its id, seqs and deliveries)"},
		{"send --from A --group G [--client-msg-id X] [--meta k=v ...] TEXT", "send a GROUP message to the group's members"},
	}},
	{name: "sync", run: runSync, notes: syncNotes, forms: []form{{"sync --user B [--after S] [--limit N] [--all]", "a user's inbox events after a checkpoint, and the next checkpoint"}}},
	{name: "tail", run: runTail, notes: tailNotes, forms: []form{{"tail --user B [--after S] [--verbose] [--heartbeat D]", "follow a user's inbox live (Subscribe) until Ctrl-C, reconnecting as needed"}}},
	{name: "unread", run: runUnread, forms: []form{{"unread --user B", "unread counts per conversation and in total"}}},
	{name: "read", run: runRead, forms: []form{{"read --user B --conv ID|--group G --up-to S", "mark a conversation read up to a seq (an inbox event)"}}},
	{name: "history", run: runHistory, forms: []form{{"history --user B --conv ID|--group G [--before S] [--limit N]", "page backwards through one conversation's copies in the user's inbox, newest first (a read-fanout group's messages are in its timeline: group history)"}}},
	{name: "recall", run: runRecall, forms: []form{{"recall --from A --msg ID", "withdraw a message from every inbox (within the recall window)"}}},
	{name: "delete", run: runDelete, forms: []form{{"delete --user B --msg ID", "hide a message in one user's inbox"}}},
	{name: "group", run: runGroup, forms: []form{
		{"group create G --owner A [--members a,b,c] [--read-fanout]", "create group G (the owner is a member)"},
		{"group add G --members a,b [--with-history]", "add members (they see only new messages unless --with-history, for read-fanout groups)"},
		{"group remove G --members a,b", "remove members; they stop receiving at once"},
		{"group show G", "the group's owner, fanout mode and members"},
		{"group sync G --user B [--after S] [--limit N] [--all]", "read a read-fanout group's timeline as member B"},
		{"group history G --user B [--before S] [--limit N]", "page backwards through a read-fanout group's timeline as member B, newest first"},
	}},
}

// writeForms lists synopses with their summaries aligned in one column,
// putting a summary on its own line when the synopsis is too long.
func writeForms(w io.Writer, forms []form) {
	const col = 42
	for _, f := range forms {
		if len(f.synopsis) <= col-4 {
			fmt.Fprintf(w, "  %-*s%s\n", col-2, f.synopsis, f.summary)
		} else {
			fmt.Fprintf(w, "  %s\n%*s%s\n", f.synopsis, col, "", f.summary)
		}
	}
}

func usage() string {
	var b strings.Builder
	b.WriteString(`seqctl: operate a seqd cluster and use its message store.

Usage:
  seqctl [--addr A] [--json] [--timeout D] COMMAND [ARGS...]

Commands:
`)
	var forms []form
	for _, c := range commands {
		forms = append(forms, c.forms...)
	}
	writeForms(&b, append(forms, form{"help", "show this text"}))
	b.WriteString("\nGlobal flags (before the command):\n")
	writeForms(&b, []form{
		{"--addr A", "any gateway or arbiter gRPC address (default " + defaultAddr + ")"},
		{"--json", "print one JSON document instead of tables (tail: one object per line)"},
		{"--timeout D", "deadline for each command's RPCs (default 10s)"},
	})
	b.WriteString(`
User and group ids are 1..2^63-1. Seqs and message ids are as send, sync
and tail print them; "seqctl send -h" says how a DIRECT conversation id is
derived when --conv is left out.

Exit status: 0 ok; 1 the cluster failed or could not be reached (running
it again later may work); 2 bad input seqctl caught itself (nothing was
sent); 3 the cluster refused the request (invalid, unknown, not allowed or
not possible in its state: running it again unchanged will not help).
Run "seqctl COMMAND -h" for a command's flags. Start a local cluster with
"go run ./cmd/seqd demo".
`)
	return b.String()
}

// env is what every command gets: the global flags and where to write.
type env struct {
	addr    string
	json    bool
	timeout time.Duration
	stdout  io.Writer
	stderr  io.Writer
}

// usageError is bad input; seqctl exits 2 and nothing was sent.
type usageError struct {
	msg string
	cmd *command // nil for global errors
}

func (e *usageError) Error() string { return e.msg }

func usagef(cmd *command, format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...), cmd: cmd}
}

// errHelp means -h was given and the help text has been printed.
var errHelp = errors.New("help requested")

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run is seqctl without the process: it returns the exit code (0 ok,
// 1 the cluster failed or could not be reached, 2 bad input, 3 the cluster
// refused the request).
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	e := &env{stdout: stdout, stderr: stderr}
	fs := flag.NewFlagSet("seqctl", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&e.addr, "addr", defaultAddr, "")
	fs.BoolVar(&e.json, "json", false, "")
	fs.DurationVar(&e.timeout, "timeout", 10*time.Second, "")
	if err := cliflag.CheckRepeats(fs, args); err != nil {
		return fail(stderr, usagef(nil, "%v", err))
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage())
		return 0
	case err != nil:
		return fail(stderr, usagef(nil, "%v", err))
	}
	if fs.NArg() == 0 {
		fmt.Fprint(stderr, usage())
		return 2
	}
	if e.timeout <= 0 {
		return fail(stderr, usagef(nil, "--timeout %v: give a positive duration such as 10s", e.timeout))
	}
	if !cliflag.HostPort(e.addr) {
		return fail(stderr, usagef(nil, "--addr %q is not host:port with a port 1..65535 (for example %s)", e.addr, defaultAddr))
	}
	name, rest := fs.Arg(0), fs.Args()[1:]
	if name == "help" {
		if len(rest) == 0 {
			fmt.Fprint(stdout, usage())
			return 0
		}
		// "help CMD" is "CMD -h" ("help help" is the general help).
		if rest[0] == "help" {
			fmt.Fprint(stdout, usage())
			return 0
		}
		name, rest = rest[0], []string{"-h"}
	}
	var cmd *command
	for _, c := range commands {
		if c.name == name {
			cmd = c
		}
	}
	if cmd == nil {
		return fail(stderr, usagef(nil, "unknown command %q", name))
	}
	return fail(stderr, cmd.run(ctx, e, cmd, rest))
}

// fail prints err and returns the exit code it stands for.
func fail(stderr io.Writer, err error) int {
	var ue *usageError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "seqctl: %s\n", ue.msg)
		if ue.cmd != nil {
			for _, f := range ue.cmd.forms {
				fmt.Fprintf(stderr, "usage: seqctl %s\n", f.synopsis)
			}
		} else {
			fmt.Fprintln(stderr, `run "seqctl help" for usage`)
		}
		return 2
	default:
		fmt.Fprintf(stderr, "seqctl: %v\n", err)
		var re *refusedError
		if errors.As(err, &re) {
			return 3
		}
		return 1
	}
}

// flagsOnly parses the flags of a command that takes no positional
// arguments, and refuses any.
func flagsOnly(cmd *command, e *env, fs *flag.FlagSet, args []string) error {
	pos, err := parseArgs(cmd, e, fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		return usagef(cmd, "%s takes no arguments; got %q", cmd.name, pos)
	}
	return nil
}

// parseArgs parses a command's flags wherever they appear among its
// positional arguments, so `drain alloc1 --wait` and `drain --wait alloc1`
// both work.
func parseArgs(cmd *command, e *env, fs *flag.FlagSet, args []string) ([]string, error) {
	fs.SetOutput(io.Discard)
	if err := cliflag.CheckRepeatsInterleaved(fs, args); err != nil {
		return nil, usagef(cmd, "%s: %v", cmd.name, err)
	}
	var pos []string
	for {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			printCommandHelp(cmd, fs, e.stdout)
			return nil, errHelp
		}
		if err != nil {
			return nil, usagef(cmd, "%s: %v%s", cmd.name, err, flagHint(err))
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

// flagHint explains a flag error: an undefined flag that is a global flag
// given after the command, or a negative number where one is not taken.
func flagHint(err error) string {
	if strings.HasPrefix(err.Error(), `invalid value "-`) {
		return " (ids, seqs and counts are not negative)"
	}
	name, ok := strings.CutPrefix(err.Error(), "flag provided but not defined: -")
	if !ok {
		return ""
	}
	name = strings.TrimPrefix(name, "-")
	switch {
	case name == "json" || name == "addr" || name == "timeout":
		return " (global flags such as --" + name + " go before the command)"
	case name != "" && name[0] >= '0' && name[0] <= '9':
		return " (ids and seqs are positive numbers)"
	}
	return ""
}

func printCommandHelp(cmd *command, fs *flag.FlagSet, w io.Writer) {
	fmt.Fprintln(w, "Usage (global flags go before the command):")
	for _, f := range cmd.forms {
		fmt.Fprintf(w, "  seqctl %s\n      %s\n", f.synopsis, f.summary)
	}
	if fs == nil {
		if cmd.notes != "" {
			fmt.Fprintf(w, "\n%s", cmd.notes)
		}
		return
	}
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			fmt.Fprintln(w, "\nFlags:")
			first = false
		}
		name, usage := flag.UnquoteUsage(f)
		arg := "--" + f.Name
		if name != "" {
			arg += " " + name
		}
		if f.DefValue != "" && f.DefValue != "false" && !strings.Contains(usage, "(default") {
			usage += fmt.Sprintf(" (default %s)", f.DefValue)
		}
		writeForms(w, []form{{arg, usage}})
	})
	if cmd.notes != "" {
		fmt.Fprintf(w, "\n%s", cmd.notes)
	}
}

// isHelp reports whether arg asks for help, for commands without flags.
func isHelp(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}
