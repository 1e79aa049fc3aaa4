//go:build !unix

package main

import "io/fs"

// allocated falls back to the file size where blocks are not known.
func allocated(fi fs.FileInfo) int64 { return fi.Size() }
