package main

import (
	"encoding/json"
	"strconv"
	"strings"
	"testing"
)

// seqTable parses next/current output into key → seq, checking the epoch
// and counter columns against the seq they claim to decode.
func seqTable(t *testing.T, out string) [][2]uint64 {
	t.Helper()
	rows := fields(out)
	if len(rows) == 0 || strings.Join(rows[0], " ") != "KEY SEQ EPOCH COUNTER" {
		t.Fatalf("no KEY SEQ EPOCH COUNTER header:\n%s", out)
	}
	var got [][2]uint64
	for _, r := range rows[1:] {
		if len(r) != 4 {
			t.Fatalf("row %q: want 4 columns", r)
		}
		var n [4]uint64
		for i, s := range r {
			v, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("row %q: %v", r, err)
			}
			n[i] = v
		}
		if n[2]<<48|n[3] != n[1] {
			t.Errorf("row %q: epoch %d and counter %d do not make seq %d", r, n[2], n[3], n[1])
		}
		got = append(got, [2]uint64{n[0], n[1]})
	}
	return got
}

func TestNextIncreases(t *testing.T) {
	addr := sharedCluster(t)
	first := seqTable(t, ok(t, "--addr", addr, "next", "101", "102", "103"))
	if len(first) != 3 || first[0][0] != 101 || first[1][0] != 102 || first[2][0] != 103 {
		t.Fatalf("next 101 102 103 printed keys %v", first)
	}
	prev := first[0][1]
	for range 5 {
		got := seqTable(t, ok(t, "--addr", addr, "next", "101"))
		if len(got) != 1 || got[0][1] <= prev {
			t.Fatalf("next 101 gave %v after seq %d; want a larger seq", got, prev)
		}
		prev = got[0][1]
	}
	// A key repeated in one call gets a larger seq each time.
	got := seqTable(t, ok(t, "--addr", addr, "next", "102", "102"))
	if !(first[1][1] < got[0][1] && got[0][1] < got[1][1]) {
		t.Errorf("next 102 102 after %d gave %v; want strictly increasing", first[1][1], got)
	}
}

func TestCurrentEqualsLastNext(t *testing.T) {
	addr := sharedCluster(t)
	ok(t, "--addr", addr, "next", "201")
	last := seqTable(t, ok(t, "--addr", addr, "next", "201"))[0][1]
	cur := seqTable(t, ok(t, "--addr", addr, "current", "201"))
	if len(cur) != 1 || cur[0] != [2]uint64{201, last} {
		t.Errorf("current 201 = %v, want [201 %d]", cur, last)
	}
	// Current does not allocate.
	again := seqTable(t, ok(t, "--addr", addr, "current", "201"))
	if again[0][1] != last {
		t.Errorf("second current 201 = %d, want %d", again[0][1], last)
	}
}

func TestSeqJSON(t *testing.T) {
	addr := sharedCluster(t)
	var rows []struct {
		Key     *uint64 `json:"key"`
		Seq     *uint64 `json:"seq"`
		Epoch   *uint32 `json:"epoch"`
		Counter *uint64 `json:"counter"`
	}
	out := ok(t, "--addr", addr, "--json", "next", "301", "302")
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("next --json is not JSON: %v\n%s", err, out)
	}
	if len(rows) != 2 {
		t.Fatalf("next --json 301 302 gave %d rows:\n%s", len(rows), out)
	}
	for i, r := range rows {
		if r.Key == nil || r.Seq == nil || r.Epoch == nil || r.Counter == nil {
			t.Fatalf("row %d lacks a field:\n%s", i, out)
		}
		if want := uint64(301 + i); *r.Key != want {
			t.Errorf("row %d key %d, want %d", i, *r.Key, want)
		}
		if *r.Seq == 0 || uint64(*r.Epoch)<<48|*r.Counter != *r.Seq {
			t.Errorf("row %d: seq %d, epoch %d, counter %d", i, *r.Seq, *r.Epoch, *r.Counter)
		}
	}
	out = ok(t, "--addr", addr, "--json", "current", "301")
	var cur []struct{ Key, Seq uint64 }
	if err := json.Unmarshal([]byte(out), &cur); err != nil {
		t.Fatalf("current --json is not JSON: %v\n%s", err, out)
	}
	if len(cur) != 1 || cur[0].Key != 301 || cur[0].Seq != *rows[0].Seq {
		t.Errorf("current --json 301 = %+v, want seq %d", cur, *rows[0].Seq)
	}
}
