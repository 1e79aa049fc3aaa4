package main

import "testing"

func TestSlotRanges(t *testing.T) {
	for _, tc := range []struct {
		in   []uint32
		want string
	}{
		{nil, "-"},
		{[]uint32{5}, "5"},
		{[]uint32{0, 1, 2, 3, 8, 10, 11, 12}, "0-3,8,10-12"},
		{[]uint32{12, 3, 11, 0, 2, 1, 10, 8}, "0-3,8,10-12"},
		{[]uint32{1, 3, 5}, "1,3,5"},
		{[]uint32{4, 4, 5}, "4-5"},
	} {
		if got := slotRanges(tc.in); got != tc.want {
			t.Errorf("slotRanges(%v) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
