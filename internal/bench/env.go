package bench

import (
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Env describes the machine a run measured, so a number can be read
// against what else was running.
type Env struct {
	CPUs       int    `json:"cpus"`
	GOMAXPROCS int    `json:"gomaxprocs"`
	Go         string `json:"go"`
	Platform   string `json:"platform"`
	// LoadAvg1 is the one-minute load average at the start (Linux only).
	LoadAvg1 float64 `json:"load_avg_1m,omitempty"`
}

// CaptureEnv reads the machine's description now.
func CaptureEnv() Env {
	e := Env{
		CPUs: runtime.NumCPU(), GOMAXPROCS: runtime.GOMAXPROCS(0),
		Go: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH,
	}
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		if f := strings.Fields(string(b)); len(f) > 0 {
			e.LoadAvg1, _ = strconv.ParseFloat(f[0], 64)
		}
	}
	return e
}

// Busy reports whether other work is likely to skew the numbers: the load
// average is already above half the CPUs before the run adds its own.
func (e Env) Busy() bool { return e.LoadAvg1 > float64(e.CPUs)/2 }
