// Package cliflag holds what seqd's commands share about flags.
package cliflag

import (
	"flag"
	"fmt"
	"strings"
)

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
