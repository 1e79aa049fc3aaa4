//go:build !linux

package peer

import "syscall"

func sysProcAttr() *syscall.SysProcAttr { return nil }
