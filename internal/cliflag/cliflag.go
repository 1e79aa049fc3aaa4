// Package cliflag holds what seqd's commands share about flags.
package cliflag

import (
	"flag"
	"fmt"
)

// Repeatable marks a flag.Value that may be given more than once (a list
// such as --peer or --to).
type Repeatable interface {
	Repeatable()
}

// OnlyOnce makes every flag of fs that is not Repeatable refuse a second
// value. The flag package would keep the last one silently, so
// `--from 1 --from 3` sent from user 3. Call it after defining the flags
// and before Parse.
func OnlyOnce(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(Repeatable); ok {
			return
		}
		o := &once{Value: f.Value, name: f.Name}
		if b, ok := f.Value.(boolFlag); ok && b.IsBoolFlag() {
			f.Value = &onceBool{o}
			return
		}
		f.Value = o
	})
}

type boolFlag interface {
	flag.Value
	IsBoolFlag() bool
}

type once struct {
	flag.Value
	name string
	set  bool
}

func (o *once) Set(s string) error {
	if o.set {
		return fmt.Errorf("given twice; give --%s once", o.name)
	}
	o.set = true
	return o.Value.Set(s)
}

// Get keeps flag.Getter working for the wrapped value.
func (o *once) Get() any {
	if g, ok := o.Value.(flag.Getter); ok {
		return g.Get()
	}
	return o.Value.String()
}

type onceBool struct{ *once }

func (o *onceBool) IsBoolFlag() bool { return true }
