package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// Result is the summary of one measured run, as printed and as written to
// --json files. Latencies are per op: one call, one batch or one pipeline.
type Result struct {
	Mode string `json:"mode"`
	// Ops counts completed operations; failed ones count in Errors only.
	Ops       uint64  `json:"ops"`
	Seqs      uint64  `json:"seqs"`
	SeqPerSec float64 `json:"seq_per_sec"`
	OpsPerSec float64 `json:"ops_per_sec"`
	P50us     float64 `json:"p50_us"`
	P99us     float64 `json:"p99_us"`
	P999us    float64 `json:"p999_us"`
	MaxUs     float64 `json:"max_us"`
	Errors    uint64  `json:"errors"`
	// ErrorSamples are the most frequent distinct error messages.
	ErrorSamples []ErrorSample `json:"error_samples,omitempty"`
	Concurrency  int           `json:"concurrency"`
	Keys         uint64        `json:"keys"`
	// SeqsPerOp is the batch or pipeline depth (1 for single calls).
	SeqsPerOp int `json:"seqs_per_op"`
	// RateTarget is the --rate asked for, if any.
	RateTarget float64 `json:"rate_target,omitempty"`
	// DurationS is the measured time, from the first op to the last.
	DurationS   float64 `json:"duration_s"`
	Interrupted bool    `json:"interrupted,omitempty"`
}

// NewResult summarises st.
func NewResult(mode string, st *Stats, concurrency int, keys uint64, seqsPerOp int, rate float64) Result {
	us := func(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e3 }
	r := Result{
		Mode: mode, Ops: st.Ops, Seqs: st.Seqs, Errors: st.Errors,
		ErrorSamples: st.ErrorSamples,
		P50us:        us(st.Latency.Quantile(0.50)),
		P99us:        us(st.Latency.Quantile(0.99)),
		P999us:       us(st.Latency.Quantile(0.999)),
		MaxUs:        us(st.Latency.Max()),
		Concurrency:  concurrency, Keys: keys, SeqsPerOp: seqsPerOp, RateTarget: rate,
		DurationS:   st.Elapsed.Seconds(),
		Interrupted: st.Interrupted,
	}
	if s := st.Elapsed.Seconds(); s > 0 {
		r.SeqPerSec = float64(st.Seqs) / s
		r.OpsPerSec = float64(st.Ops) / s
	}
	return r
}

// WriteJSON writes v, indented, to path. A regular file is replaced in
// one rename, so a failed write leaves the old file (or none), never half
// of the new one; a device or pipe such as /dev/stdout is written in place.
func WriteJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("--json %s: %w", path, err)
	}
	if err := writeReplacing(path, append(b, '\n')); err != nil {
		return fmt.Errorf("write --json %s: %w", path, err)
	}
	return nil
}

// CheckJSONPath tells, before a run, whether WriteJSON will be able to
// write path: it refuses a directory, a missing or read-only directory
// and a read-only file. It leaves nothing behind: the file it tries is a
// temporary one next to path, removed at once.
func CheckJSONPath(path string) error {
	fi, err := os.Stat(path)
	switch {
	case err == nil && fi.IsDir():
		return fmt.Errorf("--json %s: is a directory; give a file name", path)
	case err == nil:
		// An existing file or device must be writable itself.
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("--json %s: cannot write it: %w", path, err)
		}
		f.Close()
		if !fi.Mode().IsRegular() {
			return nil // written in place
		}
	case !errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("--json %s: %w", path, err)
	}
	f, _, err := tempNear(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) { // it names the temporary file, not path
			err = pe.Err
		}
		return fmt.Errorf("--json %s: cannot create a file there: %w", path, err)
	}
	f.Close()
	return os.Remove(f.Name())
}

// tempNear creates the temporary file that replaces path: next to the
// file a symbolic link points to, if path is one, so the rename replaces
// that file and keeps the link. It returns the file and the path to
// rename it to.
func tempNear(path string) (*os.File, string, error) {
	if real, err := filepath.EvalSymlinks(path); err == nil {
		path = real
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	return f, path, err
}

// writeReplacing writes b to a temporary file next to path, then renames
// it over path.
func writeReplacing(path string, b []byte) error {
	mode := fs.FileMode(0o644)
	if fi, err := os.Stat(path); err == nil {
		if !fi.Mode().IsRegular() {
			return os.WriteFile(path, b, 0o644)
		}
		mode = fi.Mode().Perm()
	}
	f, target, err := tempNear(path)
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, target)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}
