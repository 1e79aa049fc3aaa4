//go:build unix

package main

import (
	"io/fs"
	"syscall"
)

// allocated is the space a file takes on disk (its blocks, as du counts
// them), which for sparse or preallocated files differs from its size.
func allocated(fi fs.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int64(st.Blocks) * 512
	}
	return fi.Size()
}
