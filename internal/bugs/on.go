//go:build seqdbugs

package bugs

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/seqd/seqd/internal/mclock"
)

// Compiled reports whether this binary can plant bugs (built with seqdbugs).
const Compiled = true

// active is written once, by init, before any goroutine reads it.
var active = map[string]bool{}

func init() {
	for _, name := range strings.Split(os.Getenv(EnvBugs), ",") {
		if name = strings.TrimSpace(name); name == "" {
			continue
		}
		if _, ok := Lookup(name); !ok {
			fmt.Fprintf(os.Stderr, "seqd: %s names unknown bug %q; known: %s\n", EnvBugs, name, knownNames())
			os.Exit(2)
		}
		active[name] = true
	}
	if len(active) > 0 {
		fmt.Fprintf(os.Stderr, "seqd: TEST BUILD WITH PLANTED BUGS ACTIVE: %s\n", os.Getenv(EnvBugs))
	} else {
		fmt.Fprintln(os.Stderr, "seqd: test build (-tags seqdbugs): failpoints served, no planted bug active")
	}
	if v := os.Getenv(EnvClockRate); v != "" {
		rate, err := strconv.ParseFloat(v, 64)
		if err != nil || rate <= 0 {
			fmt.Fprintf(os.Stderr, "seqd: %s=%q is not a positive rate like 1.03\n", EnvClockRate, v)
			os.Exit(2)
		}
		mclock.Real.SetRate(rate)
		fmt.Fprintf(os.Stderr, "seqd: lease clock rate set to %v by %s\n", rate, EnvClockRate)
	}
}

func knownNames() string {
	var names []string
	for _, b := range Known {
		names = append(names, b.Name)
	}
	return strings.Join(names, ", ")
}

// Enabled reports whether the named bug is active.
func Enabled(name string) bool { return active[name] }

// RegisterHTTP adds the failpoint endpoints to mux. POST ClockPath?rate=R
// makes the process's lease clock (mclock.Real) run at rate R from now on;
// GET reports the current rate.
func RegisterHTTP(mux *http.ServeMux) {
	mux.HandleFunc(ClockPath, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost {
			rate, err := strconv.ParseFloat(r.URL.Query().Get("rate"), 64)
			if err != nil || rate <= 0 {
				http.Error(w, "rate must be a positive number like 1.03", http.StatusBadRequest)
				return
			}
			mclock.Real.SetRate(rate)
			fmt.Fprintf(os.Stderr, "seqd: failpoint: lease clock rate set to %v\n", rate)
		}
		fmt.Fprintf(w, "%v\n", mclock.Real.Rate())
	})
}
