package cliflag

import (
	"flag"
	"slices"
	"strings"
	"testing"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }
func (l *list) Repeatable()        {}

func newSet() *flag.FlagSet {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.String("from", "", "")
	fs.Bool("json", false, "")
	fs.Uint("limit", 0, "")
	fs.Duration("wait", 0, "")
	var l list
	fs.Var(&l, "to", "")
	return fs
}

func TestCheckRepeatsRefusesRepeats(t *testing.T) {
	for _, args := range [][]string{
		{"--from", "1", "--from", "3"},
		{"--from=1", "-from", "1"},
		{"--json", "--json"},
		{"--json=false", "--json"},
	} {
		err := CheckRepeats(newSet(), args)
		if err == nil || !strings.Contains(err.Error(), "is given twice; give it once") {
			t.Errorf("%q: %v, want a 'given twice' error", args, err)
		}
	}
}

// Past the first positional argument only the interleaved form looks.
func TestCheckRepeatsInterleaved(t *testing.T) {
	args := []string{"--limit", "5", "pos", "--limit", "5"}
	if err := CheckRepeats(newSet(), args); err != nil {
		t.Errorf("CheckRepeats %q: %v; Parse stops at pos", args, err)
	}
	if err := CheckRepeatsInterleaved(newSet(), args); err == nil || !strings.Contains(err.Error(), "--limit is given twice") {
		t.Errorf("CheckRepeatsInterleaved %q: %v", args, err)
	}
}

func TestCheckRepeatsAllowsSingleValuesAndLists(t *testing.T) {
	for _, args := range [][]string{
		nil,
		{"--from", "7", "--json", "--limit", "9", "--to", "2", "--to", "3", "rest"},
		{"--from", "7", "rest", "--from", "8"}, // Parse stops at rest
		{"--from", "--from"},                   // the second is the value of the first
		{"--wait", "-1s", "--json"},            // a value that looks like a flag
		{"--from", "1", "--", "--from"},        // after "--", arguments
		{"--nope", "--nope"},                   // unknown: Parse reports it
		{"-", "x", "-"},
	} {
		if err := CheckRepeats(newSet(), args); err != nil {
			t.Errorf("%q: %v", args, err)
		}
	}
}

func TestSplitList(t *testing.T) {
	for in, want := range map[string][]string{
		"":           nil,
		" , ,":       nil,
		"a":          {"a"},
		" a, b ,,c ": {"a", "b", "c"},
	} {
		if got := SplitList(in); !slices.Equal(got, want) {
			t.Errorf("SplitList(%q) = %q, want %q", in, got, want)
		}
	}
}
