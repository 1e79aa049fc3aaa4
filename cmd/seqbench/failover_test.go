package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

func TestFailoverMeasuresEveryFault(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three clusters; skipped with -short")
	}
	out := filepath.Join(t.TempDir(), "f.json")
	var stdout, stderr bytes.Buffer
	if err := runFailover(context.Background(), []string{"--runs", "1", "--lease", "600ms", "--json", out}, &stdout, &stderr); err != nil {
		t.Fatalf("%v\n%s", err, stderr.String())
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Faults []failoverResult `json:"faults"`
	}
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Faults) != 3 {
		t.Fatalf("%d faults measured, want 3:\n%s", len(res.Faults), stdout.String())
	}
	for _, f := range res.Faults {
		// Every fault ends within the lease, its margin and a few rounds.
		if len(f.Runs) != 1 || f.MedianMs <= 0 || f.MedianMs > 5000 {
			t.Errorf("%s: %+v", f.Fault, f)
		}
	}
}
