package main

import (
	"errors"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/seqd/seqd/internal/bench"
)

// checkEnv captures the machine's description and warns when it is
// already busy: on a shared machine the numbers measure the neighbours too.
func checkEnv(stderr io.Writer) bench.Env {
	env := bench.CaptureEnv()
	if env.Busy() {
		fmt.Fprintf(stderr, "seqbench: warning: load average %.2f on %d CPUs before starting; other processes will skew these numbers\n", env.LoadAvg1, env.CPUs)
	}
	return env
}

// printResult prints one run's summary.
func printResult(w io.Writer, r bench.Result) {
	fmt.Fprintf(w, "mode         %s\n", r.Mode)
	fmt.Fprintf(w, "load         %d workers, keys 1..%d, %d seq per op", r.Concurrency, r.Keys, r.SeqsPerOp)
	if r.RateTarget > 0 {
		fmt.Fprintf(w, ", paced at %s ops/s", bench.FormatCount(r.RateTarget))
	}
	fmt.Fprintf(w, "\nduration     %.2fs\n", r.DurationS)
	fmt.Fprintf(w, "ops          %s (%s ops/s)\n", bench.FormatCount(float64(r.Ops)), bench.FormatCount(r.OpsPerSec))
	fmt.Fprintf(w, "seqs         %s (%s seq/s)\n", bench.FormatCount(float64(r.Seqs)), bench.FormatCount(r.SeqPerSec))
	fmt.Fprintf(w, "latency µs   p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", r.P50us, r.P99us, r.P999us, r.MaxUs)
	fmt.Fprintf(w, "errors       %d\n", r.Errors)
	printErrorSamples(w, "  ", r)
}

func printErrorSamples(w io.Writer, indent string, r bench.Result) {
	for _, e := range r.ErrorSamples {
		fmt.Fprintf(w, "%s%d× %s\n", indent, e.Count, e.Message)
	}
}

// printTable prints the compare results in run order, then the ratios.
func printTable(w io.Writer, rep *compareReport) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "system\tseq/s\tops/s\tseq/op\tp50 µs\tp99 µs\tp999 µs\terrors\t")
	for _, name := range rep.order {
		if r, ok := rep.Systems[name]; ok {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%d\t%.1f\t%.1f\t%.1f\t%d\t\n", name,
				bench.FormatCount(r.SeqPerSec), bench.FormatCount(r.OpsPerSec), r.SeqsPerOp,
				r.P50us, r.P99us, r.P999us, r.Errors)
		} else if _, ok := rep.Skipped[name]; ok {
			fmt.Fprintf(tw, "%s\tskipped\t\t\t\t\t\t\t\n", name)
		}
	}
	tw.Flush()
	for _, name := range rep.order {
		if why, ok := rep.Skipped[name]; ok {
			fmt.Fprintf(w, "%s: skipped (%s)\n", name, why)
		}
		if r, ok := rep.Systems[name]; ok && len(r.ErrorSamples) > 0 {
			fmt.Fprintf(w, "%s errors:\n", name)
			printErrorSamples(w, "  ", r)
		}
	}
	for _, note := range rep.Notes {
		fmt.Fprintln(w, note)
	}
	if len(rep.Ratios) > 0 {
		fmt.Fprintln(w, "\nratios of seq/s:")
		for _, rd := range ratioDefs {
			if x, ok := rep.Ratios[rd.key]; ok {
				fmt.Fprintf(w, "  %-16s / %-16s %8.2f×\n", rd.num, rd.den, x)
			}
		}
	}
}

// checkSucceeded fails a run in which no operation succeeded: its numbers
// measure nothing, so seqbench must not exit 0 on it.
func checkSucceeded(what string, ops, errs uint64, samples []bench.ErrorSample) error {
	if ops > 0 {
		return nil
	}
	msg := fmt.Sprintf("%s: no operation succeeded (%d failed)", what, errs)
	if len(samples) > 0 {
		msg += "; most frequent error: " + samples[0].Message
	}
	return errors.New(msg)
}
