package checker

// Verdict is a checker's conclusion about a history.
type Verdict string

const (
	// Pass: the history kept the guarantee.
	Pass Verdict = "pass"
	// Fail: the checker found at least one anomaly.
	Fail Verdict = "fail"
	// Unknown: the checker could not decide (for example the
	// linearizability search timed out). It is never reported as a pass.
	Unknown Verdict = "unknown"
)

// Worst combines verdicts: any fail is a fail, else any unknown is unknown.
func Worst(vs ...Verdict) Verdict {
	out := Pass
	for _, v := range vs {
		switch {
		case v == Fail:
			return Fail
		case v == Unknown:
			out = Unknown
		}
	}
	return out
}

// FromAnomalies is Fail if there are any, else Pass.
func FromAnomalies(as []Anomaly) Verdict {
	if len(as) > 0 {
		return Fail
	}
	return Pass
}
