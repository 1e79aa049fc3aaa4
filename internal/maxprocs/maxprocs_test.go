package maxprocs

import (
	"runtime"
	"testing"
)

func TestRaise(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	t.Setenv("GOMAXPROCS", "")
	runtime.GOMAXPROCS(1)
	if got := Raise(); got != Min || runtime.GOMAXPROCS(0) != Min {
		t.Errorf("from 1: Raise() = %d, GOMAXPROCS %d, want %d", got, runtime.GOMAXPROCS(0), Min)
	}
	runtime.GOMAXPROCS(Min + 3)
	if got := Raise(); got != Min+3 {
		t.Errorf("from %d: Raise() = %d, want it left alone", Min+3, got)
	}

	// An operator's GOMAXPROCS stands, however low.
	t.Setenv("GOMAXPROCS", "1")
	runtime.GOMAXPROCS(1)
	if got := Raise(); got != 1 {
		t.Errorf("with GOMAXPROCS=1 set: Raise() = %d, want 1", got)
	}
}
