package cliflag

import (
	"flag"
	"io"
	"strings"
	"testing"
)

type list []string

func (l *list) String() string     { return strings.Join(*l, ",") }
func (l *list) Set(s string) error { *l = append(*l, s); return nil }
func (l *list) Repeatable()        {}

func newSet() (*flag.FlagSet, *string, *bool, *uint, *list) {
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	s := fs.String("from", "", "")
	b := fs.Bool("json", false, "")
	u := fs.Uint("limit", 0, "")
	var l list
	fs.Var(&l, "to", "")
	OnlyOnce(fs)
	return fs, s, b, u, &l
}

func TestOnlyOnceRefusesRepeats(t *testing.T) {
	for _, args := range [][]string{
		{"--from", "1", "--from", "3"},
		{"--from=1", "-from", "1"},
		{"--json", "--json"},
		{"--json=false", "--json"},
		{"--limit", "5", "--limit", "5"},
	} {
		fs, _, _, _, _ := newSet()
		err := fs.Parse(args)
		if err == nil || !strings.Contains(err.Error(), "given twice") {
			t.Errorf("%q: %v, want a 'given twice' error", args, err)
		}
	}
}

func TestOnlyOnceKeepsSingleValuesAndLists(t *testing.T) {
	fs, s, b, u, l := newSet()
	if err := fs.Parse([]string{"--from", "7", "--json", "--limit", "9", "--to", "2", "--to", "3", "rest"}); err != nil {
		t.Fatal(err)
	}
	if *s != "7" || !*b || *u != 9 || l.String() != "2,3" || fs.Arg(0) != "rest" {
		t.Fatalf("parsed from=%q json=%v limit=%d to=%q args=%q", *s, *b, *u, l.String(), fs.Args())
	}
	var names []string
	fs.Visit(func(f *flag.Flag) { names = append(names, f.Name) })
	if strings.Join(names, ",") != "from,json,limit,to" {
		t.Fatalf("visited %v", names)
	}
	if g, ok := fs.Lookup("limit").Value.(flag.Getter); !ok || g.Get() != uint(9) {
		t.Fatalf("getter lost: %v", fs.Lookup("limit").Value)
	}
}
