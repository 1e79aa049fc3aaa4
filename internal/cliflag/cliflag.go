// Package cliflag holds what seqd's commands share about flags.
package cliflag

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"strconv"
	"strings"
)

// UsageError is bad command-line input, found before anything started:
// commands print it once and exit 2.
type UsageError struct {
	Err error
	// Printed is set when the flag package has already printed the error
	// with the flag list.
	Printed bool
}

func (e *UsageError) Error() string { return e.Err.Error() }
func (e *UsageError) Unwrap() error { return e.Err }

// Usagef returns a *UsageError with a formatted message.
func Usagef(format string, args ...any) *UsageError {
	return &UsageError{Err: fmt.Errorf(format, args...)}
}

// Parse parses args into a command's fs, which takes flags only. A flag
// given twice, a bad flag and a positional argument are *UsageErrors; -h
// is flag.ErrHelp (the flag package printed the usage).
func Parse(fs *flag.FlagSet, args []string) error {
	if err := CheckRepeats(fs, args); err != nil {
		return &UsageError{Err: err}
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return &UsageError{Err: err, Printed: true}
	}
	if fs.NArg() > 0 {
		name := fs.Name()
		return Usagef("%s: unexpected argument %q (%s takes flags only)", name[strings.LastIndex(name, " ")+1:], fs.Arg(0), name)
	}
	return nil
}

// Repeatable marks a flag.Value that may be given more than once (a list
// such as --peer or --to).
type Repeatable interface {
	Repeatable()
}

// CheckRepeats refuses args that give a flag of fs twice, unless its value
// is Repeatable. The flag package would keep the last value silently, so
// `--from 1 --from 3` sent from user 3. It reads args as fs.Parse does
// (-x, --x, -x=v, a value in the next argument unless the flag is a bool,
// nothing after "--" or after the first positional argument). Unknown
// flags are left to Parse.
func CheckRepeats(fs *flag.FlagSet, args []string) error {
	return checkRepeats(fs, args, false)
}

// CheckRepeatsInterleaved is CheckRepeats for a command that parses flags
// again after each positional argument.
func CheckRepeatsInterleaved(fs *flag.FlagSet, args []string) error {
	return checkRepeats(fs, args, true)
}

func checkRepeats(fs *flag.FlagSet, args []string, interleaved bool) error {
	seen := map[string]bool{}
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			return nil
		}
		if len(a) < 2 || a[0] != '-' {
			if !interleaved {
				return nil
			}
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimPrefix(a[1:], "-"), "=")
		f := fs.Lookup(name)
		if f == nil {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !hasValue && !(ok && b.IsBoolFlag()) {
			i++ // the value
		}
		if _, ok := f.Value.(Repeatable); ok {
			continue
		}
		if seen[name] {
			return fmt.Errorf("--%s is given twice; give it once", name)
		}
		seen[name] = true
	}
	return nil
}

// SplitList splits a comma-separated flag value, trimming spaces and
// dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// HostPort reports whether addr is host:port with a port 1..65535, as an
// address flag (--addr) must be.
func HostPort(addr string) bool {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	n, err := strconv.ParseUint(port, 10, 16)
	return err == nil && n > 0
}
