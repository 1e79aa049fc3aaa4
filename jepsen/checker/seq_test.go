package checker

import (
	"testing"
	"time"
)

func op(client int, kind SeqKind, key uint64, start, end int, v uint64) SeqOp {
	return SeqOp{Client: client, Key: key, Kind: kind, Start: time.Duration(start), End: time.Duration(end), Value: v}
}

func TestUnique(t *testing.T) {
	tests := []struct {
		name string
		ops  []SeqOp
		want int
	}{
		{"empty", nil, 0},
		{"distinct", []SeqOp{op(1, Next, 1, 0, 1, 5), op(2, Next, 1, 0, 1, 6)}, 0},
		{"same value other keys", []SeqOp{op(1, Next, 1, 0, 1, 5), op(2, Next, 2, 0, 1, 5)}, 0},
		{"current may repeat a next", []SeqOp{op(1, Next, 1, 0, 1, 5), op(2, Current, 1, 2, 3, 5)}, 0},
		{"duplicate", []SeqOp{op(1, Next, 1, 0, 1, 5), op(2, Next, 1, 0, 1, 5)}, 1},
		{"triplicate", []SeqOp{op(1, Next, 1, 0, 1, 5), op(2, Next, 1, 0, 1, 5), op(3, Next, 1, 0, 1, 5)}, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Unique(tt.ops)
			if len(got) != tt.want {
				t.Fatalf("got %d anomalies %v, want %d", len(got), got, tt.want)
			}
			for _, a := range got {
				if a.Kind != "duplicate" || len(a.Ops) != 2 {
					t.Fatalf("bad anomaly %+v", a)
				}
			}
		})
	}
}

func TestRealtime(t *testing.T) {
	tests := []struct {
		name string
		ops  []SeqOp
		want int
	}{
		{"empty", nil, 0},
		{"increasing", []SeqOp{op(1, Next, 1, 0, 1, 5), op(1, Next, 1, 2, 3, 6)}, 0},
		{"overlapping may reorder", []SeqOp{op(1, Next, 1, 0, 10, 9), op(2, Next, 1, 1, 2, 5)}, 0},
		{"gaps allowed", []SeqOp{op(1, Next, 1, 0, 1, 5), op(1, Next, 1, 2, 3, 500)}, 0},
		{"rollback", []SeqOp{op(1, Next, 1, 0, 1, 6), op(2, Next, 1, 2, 3, 5)}, 1},
		{"repeat after completion", []SeqOp{op(1, Next, 1, 0, 1, 6), op(2, Next, 1, 2, 3, 6)}, 1},
		{"touching is not before", []SeqOp{op(1, Next, 1, 0, 2, 6), op(2, Next, 1, 2, 3, 5)}, 0},
		{"current equal is fine", []SeqOp{op(1, Next, 1, 0, 1, 6), op(2, Current, 1, 2, 3, 6)}, 0},
		{"current below a completed next", []SeqOp{op(1, Next, 1, 0, 1, 6), op(2, Current, 1, 2, 3, 5)}, 1},
		{"next not above a completed current", []SeqOp{op(1, Current, 1, 0, 1, 9), op(2, Next, 1, 2, 3, 9)}, 1},
		{"old op far back still counts", []SeqOp{op(1, Next, 1, 0, 1, 100), op(1, Next, 1, 2, 3, 101), op(2, Next, 1, 50, 60, 99)}, 1},
		{"other keys independent", []SeqOp{op(1, Next, 1, 0, 1, 100), op(2, Next, 2, 2, 3, 1)}, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Realtime(tt.ops)
			if len(got) != tt.want {
				t.Fatalf("got %d anomalies %v, want %d", len(got), got, tt.want)
			}
		})
	}
}
